"""A run folder: the files of one training run, and the rules that keep a second run out of it.

A run folder holds checkpoint.pt (the newest checkpoint), checkpoints/step-N.pt (the last few, to
fall back on), config.json, metrics.jsonl, tensorboard/ and, once evaluated, eval.json, eval_info.json
and report.md (`RunFolder` names them all). Work already on disk is reused by one rule
(`reuse_finished_run`). While a run trains, `claim` makes its process the folder's only writer:

- a lock: `run.lock`, locked through the operating system for as long as the run lasts and holding
  the owner's pid. A second process on the folder stops with that pid. The system drops the lock
  when its owner exits, however it exits, so a crash never leaves the folder locked.
- another run is never replaced by accident: a folder that holds one is refused unless the caller
  asks to continue it (resume=True, the same configuration) or to replace it (overwrite=True, which
  deletes the old run's files first).
- temporary files left by writers killed mid-write are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from .checkpoints import (atomic_write, load_checkpoint, read_json, read_jsonl, remove_orphaned_temporary_files,
                          save_checkpoint)
from .presets import Config


class RunFolder:
    """The names of the files a run folder holds: every writer and reader of a run goes through these."""

    CHECKPOINT = "checkpoint.pt"          # the newest checkpoint
    HISTORY = "checkpoints"               # step-NNNNNNNN.pt: the last few, to fall back on
    CONFIG = "config.json"                # the run's identity
    METRICS = "metrics.jsonl"             # one record every log_every steps, one per evaluation
    TENSORBOARD = "tensorboard"           # the same records as TensorBoard events (run/events.py)
    LOCK = "run.lock"
    EVAL = "eval.json"                    # what `eval` writes beside the checkpoint
    EVAL_INFO = "eval_info.json"
    REPORT = "report.md"
    RESULT = "result.json"                # a sweep's (variant, seed): its probe accuracies
    SUPERVISED = "supervised.pt"          # the supervised baseline's encoder and summary
    SUPERVISED_SUMMARY = "supervised.json"
    # What a training run writes, then what evaluating it writes: both go when a run is overwritten,
    # since a report left behind would describe the old run's weights.
    RUN_FILES = (CHECKPOINT, HISTORY, CONFIG, METRICS, TENSORBOARD)
    EVALUATION_FILES = (EVAL, EVAL_INFO, REPORT)


def reuse_finished_run(where: str | Path, recorded: dict | None, config: Config, finished: bool) -> bool:
    """The one rule for work already on disk: True when `recorded` (the configuration saved with a
    checkpoint or result at `where`) is `config`'s and that work is `finished`, so the caller loads it;
    False when nothing is recorded or it is unfinished (the caller trains, or continues). A recorded run
    of another configuration is refused: it is never replaced or mixed in silently."""
    if recorded is None:
        return False
    try:
        changed = Config.from_dict(recorded).changes_to(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} does not hold a valid configuration ({error}); choose another --out") from None
    if changed:
        raise ValueError(f"{where} holds a run of a different configuration ({changed}); use the same settings, "
                         "replace it with --overwrite (overwrite=True), or choose another folder")
    return finished


WHAT_TO_DO = "continue it with --resume (resume=True), replace it with --overwrite (overwrite=True), or choose another --out"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked: in use, holding another run, not writable, full."""


def ensure_writable_folder(path: str | Path) -> None:
    """Refuse, before any work, an output folder that cannot be written: a file, a folder below a
    file, or one on a read-only path (it need not exist yet: its nearest existing parent is checked)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a folder: choose another output folder (--out)")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise RunFolderError(f"{path} cannot be created: {existing} is a file; choose another output folder (--out)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{existing} is read-only, so {path} cannot be written; choose another output folder "
                             "(--out) or make it writable")


def run_files(folder: Path) -> list[str]:
    """The files of a training run present in `folder` (empty: it holds no run)."""
    return [name for name in RunFolder.RUN_FILES if (folder / name).exists()]


class RunLock:
    """The exclusive lock of a run folder (see the module's docstring), taken on construction."""

    def __init__(self, folder: Path):
        self.path = folder / RunFolder.LOCK
        while True:  # until we hold the lock on the file that is at `path` now (see _locked_file)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(f"{folder} is in use by another training run ({self._holder()}, lock file "
                                     f"{self.path}); wait for it to finish or stop it, or choose another --out") from None
            if self._locked_file(fd):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd

    def _locked_file(self, fd: int) -> bool:
        # A previous owner removes the file while releasing: a lock on the file it removed counts for nothing.
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _holder(self) -> str:
        for _ in range(50):  # the owner writes its pid just after taking the lock
            try:
                fields = self.path.read_text().split()
            except FileNotFoundError:
                fields = []
            if fields:
                host = f" on {fields[1]}" if len(fields) > 1 and fields[1] != socket.gethostname() else ""
                return f"process {fields[0]}{host}"
            time.sleep(0.02)
        return "a process that has not written its pid"

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # while still locked, so that nobody locks the file being removed
        os.close(self.fd)


@contextlib.contextmanager
def claim(folder: str | Path, config: Config, resume: bool = False, overwrite: bool = False):
    """Hold `folder` for a training run of `config` while the block runs (see the module's docstring):
    created if needed and locked; a folder holding another run refused unless `resume` (continue it,
    with the same configuration) or `overwrite` (delete its files first)."""
    folder = Path(folder)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run in the folder, or replace it")
    ensure_writable_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = RunLock(folder)
    try:
        present = run_files(folder)
        if present and overwrite:
            _delete_run(folder)
        elif present and not resume:
            raise RunFolderError(f"{folder} already holds a training run ({', '.join(present)}); {WHAT_TO_DO}")
        elif present:
            reuse_finished_run(folder / RunFolder.CONFIG, read_json(folder / RunFolder.CONFIG), config, finished=False)
        for place in (folder, folder / "checkpoints"):
            remove_orphaned_temporary_files(place)
        yield
    finally:
        lock.release()


def _delete_run(folder: Path) -> None:
    for name in RunFolder.RUN_FILES + RunFolder.EVALUATION_FILES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(path: Path, run_dir: Path):
    """Turn a failed write of a run's file (a full disk, a folder made read-only meanwhile) into a
    RunFolderError that says what is still intact and how to continue."""
    try:
        yield
    except OSError as error:
        raise RunFolderError(f"could not write {path} ({error.strerror or error}); {last_checkpoint_text(run_dir)}: "
                             "free space or fix the folder, then continue with --resume (resume=True)") from None


def save_run_checkpoint(run_dir: str | Path, state: dict, keep: int = 2) -> Path:
    """Write run_dir/checkpoint.pt for `state['step']` and keep the last `keep` in run_dir/checkpoints/."""
    run_dir = Path(run_dir)
    latest = run_dir / RunFolder.CHECKPOINT
    save_checkpoint(latest, state)
    history = run_dir / RunFolder.HISTORY
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
    for path in (Path(run_dir) / RunFolder.HISTORY).glob("step-*.pt"):
        digits = path.stem.removeprefix("step-")
        if digits.isdigit():
            entries.append((int(digits), path))
    return entries


def last_checkpoint_text(run_dir: str | Path) -> str:
    """Where a run's newest checkpoint is and its step (from the names kept in checkpoints/, nothing
    loaded), for messages about a run that stopped: 'the last checkpoint is ...' or that there is none."""
    latest = Path(run_dir) / RunFolder.CHECKPOINT
    if not latest.exists():
        return f"no checkpoint has been written in {run_dir} yet"
    steps = [step for step, _ in _history(Path(run_dir))]
    return f"the last checkpoint is {latest}" + (f" (step {max(steps)})" if steps else "")


def latest_run_checkpoint(run_dir: str | Path, repair: bool = False) -> dict | None:
    """The newest loadable checkpoint of a run (None when it has none); unreadable ones are skipped with a
    warning. repair: an unreadable checkpoint.pt (a truncated file, a folder) is moved aside to
    checkpoint.pt.unreadable and the checkpoint found instead is copied in its place, so that the next
    `eval` reads what training resumed from, not the broken file."""
    run_dir = Path(run_dir)
    main = run_dir / RunFolder.CHECKPOINT
    candidates = [main] + [path for _, path in sorted(_history(run_dir), reverse=True)]
    for path in candidates:
        if path.exists():
            try:
                state = load_checkpoint(path)
            except (ValueError, FileNotFoundError) as error:  # FileNotFoundError: a folder of that name
                warnings.warn(f"skipping unreadable checkpoint: {error}", stacklevel=2)
                continue
            if repair and path != main and main.exists():
                _replace_broken_checkpoint(main, path)
            return state
    return None


def _replace_broken_checkpoint(broken: Path, good: Path) -> None:
    aside = broken.with_name(broken.name + ".unreadable")
    if aside.is_dir():
        shutil.rmtree(aside)
    os.replace(broken, aside)  # kept for inspection, never deleted unasked
    atomic_write(broken, lambda f: f.write(good.read_bytes()))
    warnings.warn(f"{broken} was unreadable: moved to {aside.name}; {good.name} now stands in its place", stacklevel=3)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (kind 'train' every log_every steps, 'eval' per evaluation)."""
    return read_jsonl(Path(run_dir) / RunFolder.METRICS)


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records of metrics.jsonl up to `step`: drops what a killed run logged after its last
    checkpoint (and a torn last line), so a resumed run's log reads as one run."""
    path = Path(run_dir) / RunFolder.METRICS
    if path.exists():
        keep = [r for r in read_jsonl(path) if r["step"] <= step]
        atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in keep).encode()))


def checkpoint_identity(path: str | Path) -> dict:
    """What an evaluation describes: the checkpoint file, its SHA-256 and its training step (None for
    an official checkpoint), recorded beside every evaluation so that a later checkpoint shows it stale."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    try:
        step = load_checkpoint(path).get("step")
    except ValueError:  # an official checkpoint: no training step recorded
        step = None
    return {"checkpoint": str(path), "sha256": digest.hexdigest(), "step": step}


def stale_evaluation(info: dict) -> str | None:
    """Why an evaluation (eval_info.json) no longer describes its checkpoint, or None when it does: the
    file changed since (a run trained on, or resumed), or the evaluation recorded no identity at all."""
    if "sha256" not in info:
        return "unverified: the evaluated checkpoint was not recorded (an older evaluation); run eval again"
    path = Path(info["checkpoint"])
    if path.exists() and checkpoint_identity(path)["sha256"] != info["sha256"]:
        return f"STALE: evaluated at step {info.get('step')}; {path} has changed since: run eval again"
    return None
