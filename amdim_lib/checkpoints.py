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
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{path} is not a readable AMDIM workbook checkpoint (truncated, foreign or unsafe file; "
                         f"only tensors and plain containers are loaded): {type(error).__name__}: {first_line}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an AMDIM workbook checkpoint (expected a dict with format {FORMAT!r}, "
                         "as written by `python -m amdim_lib train`)")
    if state.get("version") != VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}; this library reads version {VERSION}")
    return state


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
    for old in sorted(history.glob("step-*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return latest


def latest_run_checkpoint(run_dir: str | Path) -> dict | None:
    """The newest loadable checkpoint of a run (None when it has none); unreadable ones are skipped with a warning."""
    run_dir = Path(run_dir)
    candidates = [run_dir / LATEST] + sorted((run_dir / "checkpoints").glob("step-*.pt"), reverse=True)
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
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                warnings.warn(f"{path}: dropped a torn last line (the run was stopped while writing it)", stacklevel=2)
                break
            raise ValueError(f"{path}, line {number}, is not a JSON record; the log is damaged: move it away to "
                             "start the log afresh") from None
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}, line {number}, is not a metrics record (no 'step'); the log is damaged: "
                             "move it away to start the log afresh")
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
