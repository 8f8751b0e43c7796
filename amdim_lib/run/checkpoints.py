"""Checkpoints that are safe to write and safe to load.

Writing: a temporary file in the same folder, flushed to disk, then renamed over the old one, so an
interruption or a full disk never leaves a half-written checkpoint or JSON file (what a run folder
keeps, and under which names, is amdim_lib.run.runfolder).
Loading: `torch.load(weights_only=True)` accepts tensors and plain containers only, so a crafted file
cannot run code; the format name and version are checked before anything is used.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import torch

FORMAT = "amdim-workbook-checkpoint"
VERSION = 1


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
    """Atomically write `state` (tensors and plain containers) with the format header. A failed write
    is an OSError whatever raised it: PyTorch's own writer reports a full disk as a RuntimeError."""
    try:
        atomic_write(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))
    except RuntimeError as error:
        if not any(word in str(error) for word in ("inline_container", "PytorchStreamWriter", "write")):
            raise
        raise OSError(errno.EIO, f"PyTorch could not write the file, a full disk or a lost folder: "
                                 f"{str(error).strip().splitlines()[0][:200]}") from None


def save_json(path: str | Path, data: dict) -> None:
    """Atomically write `data` as indented JSON."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def check_archive(path: str | Path) -> None:
    """Refuse a zip-format checkpoint with a compressed entry before torch.load inflates it. torch.save
    stores every entry as is; a compressed one was made by hand, and its inflated size could be anything
    (a 3.9 MB file held a 2 GiB tensor). Files of the older, non-zip format pass unchanged."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            packed = [entry for entry in archive.infolist() if entry.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable checkpoint archive: {error}") from None
    if packed:
        inflated = sum(entry.file_size for entry in packed)
        raise ValueError(f"{path} holds {len(packed)} compressed entr{'y' if len(packed) == 1 else 'ies'} "
                         f"({packed[0].filename}, {inflated / 2**20:,.0f} MiB once inflated), which torch.save never "
                         "writes: it was altered; use another checkpoint of the run or train again")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely; a clear error names the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    check_archive(path)
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
    """What torch.load objected to, in one line. Its refusals come wrapped in advice to load the file
    unsafely (which would run the object's code) or to allow-list the object: whatever a PyTorch version
    words it, only the refused object or the unpickler's own reason is kept, never the advice."""
    text = str(error).strip()
    refused = re.search(r"(?:GLOBAL|Unsupported class|unrecognized function)\s+`?([\w.]+)", text)
    if refused:
        return f"it holds a Python object ({refused.group(1)}), which could run code when loaded: refused"
    if "weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text:
        reason = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\.?$)", text, re.S)
        detail = f" ({' '.join(reason.group(1).split())[:120]})" if reason else ""
        return f"it holds something other than tensors and plain containers{detail}: refused"
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first_line[:300]}"


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


def check_weights(path: str | Path, saved: dict, expected: dict) -> None:
    """Refuse weights that would load without an error but give meaningless features: an integer,
    boolean or complex tensor where the model holds floating-point numbers (load_state_dict would cast
    it silently, truncating every weight), weights of other shapes, and NaN or infinity. `expected`: the
    model's state dict, best built on the meta device, so that hyperparameters that describe a huge model
    are refused before any of it is allocated."""
    wrong_kind = [f"{name} ({str(t.dtype).removeprefix('torch.')})" for name, t in saved.items()
                  if name in expected and expected[name].is_floating_point()
                  and not (isinstance(t, torch.Tensor) and t.is_floating_point())]
    if wrong_kind:
        raise ValueError(f"{path} holds weights that are not floating-point numbers ({', '.join(wrong_kind[:3])}"
                         f"{', ...' if len(wrong_kind) > 3 else ''}): it was altered or is not a model's checkpoint; "
                         "use another checkpoint of the run or train again")
    wrong_shape = [f"size mismatch for {name}: {list(t.shape)} in the file, {list(expected[name].shape)} in the model"
                   for name, t in saved.items()
                   if name in expected and isinstance(t, torch.Tensor) and t.shape != expected[name].shape]
    if wrong_shape:
        raise ValueError(f"{path} cannot be used: its weights do not fit the configuration it records ({wrong_shape[0]}"
                         f"{f' and {len(wrong_shape) - 1} more' if len(wrong_shape) > 1 else ''}); it was altered or "
                         "written by another version: use another checkpoint of the run or train again")
    bad = non_finite_entries(saved)
    if bad:
        raise ValueError(f"{path} holds non-finite weights ({', '.join(bad[:3])}); its features would be meaningless: "
                         f"evaluate an earlier checkpoint of the run ({Path(path).parent / 'checkpoints'}) or train again")


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
