"""Checkpoints that are safe to write and safe to load.

Writing: a temporary file in the same folder, flushed to disk, then renamed over the old one, so an
interruption or a full disk never leaves a half-written checkpoint; the last few are kept as
`checkpoints/step-NNNNNNNN.pt` (hard links, no extra space) to fall back on.
Loading: `torch.load(weights_only=True)` accepts tensors and plain containers only, so a crafted file
cannot run code; the format name and version are checked before anything is used.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch

FORMAT = "amdim-workbook-checkpoint"
VERSION = 1
LATEST = "checkpoint.pt"


def atomic_write(path: str | Path, write) -> None:
    """Write `path` through write(binary file) into a temporary file beside it, fsync, then rename it
    over `path`: a reader (or a run killed meanwhile) sees the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically write `state` (tensors and plain containers) with the format header."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))


def save_json(path: str | Path, data: dict) -> None:
    """Atomically write `data` as indented JSON."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely; a clear error names the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable AMDIM workbook checkpoint (truncated, foreign or unsafe file; "
                         f"only tensors and plain containers are loaded): {load_failure(error)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an AMDIM workbook checkpoint (expected a dict with format {FORMAT!r}, "
                         "as written by `python -m amdim_lib train`)")
    if state.get("version") != VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}; this library reads version {VERSION}")
    return state


def load_failure(error: Exception) -> str:
    """What torch.load objected to, in one line. Its refusal of a pickled object comes with advice to
    load the file unsafely (which would run the object's code): only the object's name is kept."""
    text = str(error).strip()
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return f"it holds a Python object ({refused.group(1)}), which could run code when loaded: refused"
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first_line}"


def unusable_checkpoint(path: str | Path, error: Exception) -> ValueError:
    """The error for a checkpoint of the right format whose contents do not fit (an entry missing or
    of the wrong kind, an invalid configuration, weights of other shapes), as one line naming `path`."""
    if isinstance(error, KeyError):
        what = f"it has no {error.args[0]!r} entry"
    elif isinstance(error, RuntimeError):  # load_state_dict: a headline, then one line per mismatch
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        what = f"its weights do not fit the configuration it records ({(lines[1:] or lines or [''])[0][:300]})"
    else:
        what = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"{path} cannot be used: {what}; it was altered or written by another version of the "
                      "library: use another checkpoint of the run (its checkpoints/ folder) or train again")


def non_finite_entries(tensors: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or infinity."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]


def save_run_checkpoint(run_dir: str | Path, state: dict, keep: int = 2) -> Path:
    """Write run_dir/checkpoint.pt for `state['step']` and keep the last `keep` in run_dir/checkpoints/."""
    run_dir = Path(run_dir)
    latest = run_dir / LATEST
    save_checkpoint(latest, state)
    history = run_dir / "checkpoints"
    history.mkdir(exist_ok=True)
    entry = history / f"step-{state['step']:08d}.pt"
    entry.unlink(missing_ok=True)
    try:
        os.link(latest, entry)
    except OSError:  # file systems without hard links: keep the latest only
        return latest
    # Pruned among the steps up to this one only: an entry ahead of it is not this run's past.
    past = sorted((step, path) for step, path in _history(run_dir) if step <= state["step"])
    for _, old in past[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return latest


def _history(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints kept in run_dir/checkpoints/, read from their names."""
    entries = []
    for path in (Path(run_dir) / "checkpoints").glob("step-*.pt"):
        digits = path.stem.removeprefix("step-")
        if digits.isdigit():
            entries.append((int(digits), path))
    return entries


def last_checkpoint_text(run_dir: str | Path) -> str:
    """Where a run's newest checkpoint is and its step (from the names kept in checkpoints/, nothing
    loaded), for messages about a run that stopped: 'the last checkpoint is ...' or that there is none."""
    latest = Path(run_dir) / LATEST
    if not latest.exists():
        return f"no checkpoint has been written in {run_dir} yet"
    steps = [step for step, _ in _history(Path(run_dir))]
    return f"the last checkpoint is {latest}" + (f" (step {max(steps)})" if steps else "")


def remove_orphaned_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (`.NAME.tmp-PID`, see `atomic_write`) that writers killed mid-write
    left in `folder`; a live process's stay. Returns the paths removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def latest_run_checkpoint(run_dir: str | Path) -> dict | None:
    """The newest loadable checkpoint of a run (None when it has none); unreadable ones are skipped with a warning."""
    run_dir = Path(run_dir)
    candidates = [run_dir / LATEST] + [path for _, path in sorted(_history(run_dir), reverse=True)]
    for path in candidates:
        if path.exists():
            try:
                return load_checkpoint(path)
            except ValueError as error:
                warnings.warn(f"skipping unreadable checkpoint: {error}", stacklevel=2)
    return None


def read_json(path: str | Path) -> dict | None:
    """A JSON file of a run (config.json, eval.json, result.json), or None when it does not exist.
    A file that exists but does not parse is an error that names it (never silently treated as absent)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); move it away or delete it") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log. A torn last line (a run killed mid-write, a full disk) is
    dropped with a warning; a bad line anywhere else, or a record without `step`, is an error naming the file."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text(errors="replace").split("\n"), 1)
             if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if index == len(lines) - 1:
                warnings.warn(f"{path}: dropped a torn last line (the run was stopped while writing it)", stacklevel=2)
                break
            raise ValueError(f"{path}, line {number}, is not a JSON record; the log is damaged: move it away to "
                             "start the log afresh") from None
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            raise ValueError(f"{path}, line {number}, is not a metrics record (no integer 'step'); the log is "
                             "damaged: move it away to start the log afresh")
        records.append(record)
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (kind 'train' every log_every steps, 'eval' per evaluation)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records of metrics.jsonl up to `step`: drops what a killed run logged after its last
    checkpoint (and a torn last line), so a resumed run's log reads as one run."""
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        keep = [r for r in read_jsonl(path) if r["step"] <= step]
        atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in keep).encode()))
