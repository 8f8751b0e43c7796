"""A run folder belongs to one run: locked while it trains, never replaced or pruned by another by accident,
readable after a crash, and every failure to write it says what is intact and how to go on."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import amdim_lib.run.checkpoints as checkpoints
import amdim_lib.run.train as train_module
from amdim_lib.__main__ import main
from cli_exit import exit_message
from amdim_lib.run.checkpoints import load_checkpoint
from amdim_lib.run.runfolder import read_metrics, save_run_checkpoint
from amdim_lib.run.presets import get_config
from amdim_lib.run.runfolder import RunFolder, RunFolderError
from amdim_lib.run.train import train

# Four updates of the smoke model, a checkpoint after each.
TINY = dict(train_size=64, test_size=32, batch_size=16, epochs=1, checkpoint_every=1)
TINY_ARGS = ["--preset", "smoke", "--no-progress"] + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture
def tiny():
    return get_config("shapes", "smoke", **TINY)


def _snapshot(folder):
    """Every file of a folder and its bytes (what must survive a refused command)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- one run per folder

def test_two_processes_on_one_folder_one_trains_the_other_names_its_pid(tmp_path):
    """Both start at once; whichever takes the lock is frozen while holding it (SIGSTOP), so the
    other certainly meets the lock, whatever the timing; then it finishes its run untouched."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "amdim_lib", "train", *TINY_ARGS, "--out", str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        start = time.time()
        while not ((out / RunFolder.LOCK).exists() and (out / RunFolder.LOCK).read_text().strip()):
            assert time.time() - start < 120 and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.005)
        holder_pid = int((out / RunFolder.LOCK).read_text().split()[0])
        holder = next(p for p in procs if p.pid == holder_pid)
        other = next(p for p in procs if p.pid != holder_pid)
        holder.send_signal(signal.SIGSTOP)
        _, err = other.communicate(timeout=120)
        holder.send_signal(signal.SIGCONT)
        out_text, holder_err = holder.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert other.returncode == 1 and holder.returncode == 0, (err, holder_err)
    assert f"in use by another training run (process {holder_pid}" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0, "one line"
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 4
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4], "one run's log, each step once"
    assert json.loads((out / "config.json").read_text())["train_size"] == 64
    assert not (out / RunFolder.LOCK).exists(), "the lock goes with its holder"
    assert not [p for p in out.rglob(".*tmp-*")]


def test_a_lock_left_by_a_crashed_run_is_taken_over(tiny, tmp_path):
    train(tiny, tmp_path, stop_at_step=2, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / RunFolder.LOCK).write_text(f"{dead.pid} somehost\n")  # as a SIGKILLed run leaves it: unlocked, stale pid
    summary = train(tiny, tmp_path, resume=True, progress=False)
    assert summary["steps"] == 4
    assert not (tmp_path / RunFolder.LOCK).exists()


def test_a_failed_run_releases_its_folder(tiny, tmp_path, monkeypatch):
    real = train_module.objective

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(train_module, "objective", poisoned)
    with pytest.raises(FloatingPointError):
        train(tiny, tmp_path, progress=False)
    assert not (tmp_path / RunFolder.LOCK).exists()
    monkeypatch.setattr(train_module, "objective", real)
    assert train(tiny, tmp_path, resume=True, progress=False)["steps"] == 4, "the same process may continue"


# ----------------------------------------------------------------------------- refuse, resume, overwrite

def test_a_rerun_without_resume_is_refused_and_destroys_nothing(tiny, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--out", str(out)]) == 0
    (out / "eval.json").write_text("{}")
    before = _snapshot(out)
    message = exit_message(["train", *TINY_ARGS, "--set", "lr=1e-3", "--out", str(out)])
    assert str(out) in message and "already holds a training run" in message
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    assert _snapshot(out) == before
    with pytest.raises(RunFolderError, match="already holds a training run"):
        train(tiny, out, progress=False)
    assert _snapshot(out) == before


def test_overwrite_replaces_the_run_and_its_evaluation(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--set", "epochs=2", "--out", str(out)]) == 0
    (out / "eval.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert main(["train", *TINY_ARGS, "--set", "lr=1e-3", "--out", str(out), "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["config"]["lr"] == 1e-3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000004.pt"]
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4]
    assert not (out / "eval.json").exists(), "a report of the old weights goes with them"
    assert (out / "notes.txt").read_text() == "mine", "files that are not the run's stay"
    with pytest.raises(SystemExit) as both:
        main(["train", *TINY_ARGS, "--out", str(out), "--resume", "--overwrite"])
    assert both.value.code == 2
    with pytest.raises(ValueError, match="exclude each other"):
        train(get_config("shapes", "smoke", **TINY), out, resume=True, overwrite=True)


def test_resume_of_a_folder_without_checkpoint_checks_its_config(tiny, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny.replace(lr=1e-3).to_dict()))
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"different configuration \(lr 0.001 -> 0.0002\)"):
        train(tiny, tmp_path, resume=True, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-3


def test_checkpoints_ahead_of_the_run_are_never_pruned(tmp_path):
    """Pruning keeps the newest `keep` of this run's past: entries at later steps are left alone."""
    for step in (10, 20):
        save_run_checkpoint(tmp_path, {"step": step})
    save_run_checkpoint(tmp_path, {"step": 1}, keep=2)
    save_run_checkpoint(tmp_path, {"step": 2}, keep=2)
    save_run_checkpoint(tmp_path, {"step": 3}, keep=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000002.pt", "step-00000003.pt", "step-00000010.pt", "step-00000020.pt"]


# ----------------------------------------------------------------------------- the log

def test_a_torn_or_damaged_log_through_the_command_line(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny, out, stop_at_step=2, progress=False)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 3, "lo')  # killed mid-write
    with pytest.warns(UserWarning, match=re.escape(f"{out / 'metrics.jsonl'}: dropped a torn last line")):
        assert main(["train", *TINY_ARGS, "--out", str(out), "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4]

    damaged = tmp_path / "damaged"
    train(tiny, damaged, stop_at_step=2, progress=False)
    lines = (damaged / "metrics.jsonl").read_text().splitlines()
    (damaged / "metrics.jsonl").write_text("\n".join([lines[0], '{"kind": "train", "step": "2"}', *lines[1:]]) + "\n")
    before = _snapshot(damaged)
    message = exit_message(["train", *TINY_ARGS, "--out", str(damaged), "--resume"])
    assert f"{damaged / 'metrics.jsonl'}, line 2, is not a metrics record" in message and "move it away" in message
    assert _snapshot(damaged) == before
    capsys.readouterr()


# ----------------------------------------------------------------------------- writing fails

@pytest.mark.parametrize("case", ["file", "below a file", "read-only"])
def test_an_output_folder_that_cannot_be_written_is_refused_first(tmp_path, monkeypatch, case):
    """(Tests run as root, who may write anywhere: read-only is simulated by os.access saying so.)"""
    (tmp_path / "a_file").write_text("keep")
    out = {"file": tmp_path / "a_file", "below a file": tmp_path / "a_file" / "run", "read-only": tmp_path / "ro" / "run"}[case]
    if case == "read-only":
        (tmp_path / "ro").mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro") else real_access(p, mode))
    message = exit_message(["train", *TINY_ARGS, "--out", str(out)])
    expected = {"file": f"{out} is a file, not a folder", "below a file": f"{tmp_path / 'a_file'} is a file",
                "read-only": f"{tmp_path / 'ro'} is read-only"}[case]
    assert expected in message and "--out" in message and "\n" not in message
    assert (tmp_path / "a_file").read_text() == "keep" and not (tmp_path / "ro" / "run").exists()


def test_a_full_disk_stops_with_the_intact_checkpoint_named_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save, calls = torch.save, {"n": 0}

    def disk_full_at_the_third(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(checkpoints.torch, "save", disk_full_at_the_third)
    message = exit_message(["train", *TINY_ARGS, "--out", str(out)])
    assert f"could not write {out / 'checkpoint.pt'} (No space left on device)" in message
    assert f"the last checkpoint is {out / 'checkpoint.pt'} (step 2)" in message and "--resume" in message
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not [p for p in out.rglob(".*tmp-*")] and not (out / RunFolder.LOCK).exists()
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert main(["train", *TINY_ARGS, "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    capsys.readouterr()


def test_temporary_files_of_killed_writers_are_removed_at_the_start(tiny, tmp_path):
    train(tiny, tmp_path, stop_at_step=2, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphans = [tmp_path / f".checkpoint.pt.tmp-{dead.pid}", tmp_path / f".metrics.jsonl.tmp-{dead.pid}"]
    live = tmp_path / f".eval.json.tmp-{os.getppid()}"  # a writer that is still running
    for path in orphans + [live]:
        path.write_bytes(b"half a file")
    train(tiny, tmp_path, resume=True, progress=False)
    assert not any(p.exists() for p in orphans) and live.exists()


# ----------------------------------------------------------------------------- the non-finite stop

@pytest.mark.parametrize("bad_step,expected", [(1, "no checkpoint has been written"),
                                               (3, "the last checkpoint is {out} (step 2)")])
def test_the_non_finite_stop_says_which_checkpoint_exists(tiny, tmp_path, monkeypatch, bad_step, expected):
    real, calls = train_module.objective, {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == bad_step:
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(train_module, "objective", poisoned)
    with pytest.raises(FloatingPointError) as stopped:
        train(tiny, tmp_path, progress=False)
    message = str(stopped.value)
    assert expected.format(out=tmp_path / "checkpoint.pt") in message and "\n" not in message
    if bad_step == 1:
        assert "last good checkpoint" not in message and not (tmp_path / "checkpoint.pt").exists()
