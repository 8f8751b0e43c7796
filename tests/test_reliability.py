"""Runs survive interruption and bad input; checkpoints are safe to write and to load."""

import errno
import io
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from PIL import Image

import amdim_lib.run.checkpoints as checkpoints
import amdim_lib.run.train as train_module
from amdim_lib.__main__ import main
from amdim_lib.run.checkpoints import load_checkpoint
from amdim_lib.run.runfolder import RunFolderError, latest_run_checkpoint, save_run_checkpoint, writing
from amdim_lib.data.datasets import build_dataset
from amdim_lib.run.presets import get_config
from amdim_lib.run.runfolder import RunFolder, read_metrics
from amdim_lib.run.train import train

SMOKE_RUN = ["--preset", "smoke", "--no-progress", "--set", "train_size=128", "--set", "batch_size=16",
             "--set", "epochs=3", "--set", "checkpoint_every=1"]


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "amdim_lib", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path} appeared: {proc.communicate()}"
        assert time.time() - start < timeout, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


def _same_weights(a, b):
    for part in ("encoder", "probes"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs"


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path):
    straight = _cli(*SMOKE_RUN, "--out", str(tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.communicate()
    victim = _cli(*SMOKE_RUN, "--out", str(tmp_path / "killed"))
    _wait_for(tmp_path / "killed" / "checkpoints" / "step-00000004.pt", victim)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert 4 <= state["step"] < 24, "the run was killed mid-way"
    resumed = _cli(*SMOKE_RUN, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    final = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert final["step"] == 24
    _same_weights(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), final)
    assert len(list((tmp_path / "killed" / "checkpoints").glob("step-*.pt"))) == 2, "only the last 2 are kept"
    events = EventAccumulator(str(tmp_path / "killed" / RunFolder.TENSORBOARD))
    events.Reload()  # the resumed run's TensorBoard curve: each step once, in order
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in read_metrics(tmp_path / "killed")
                                                             if r["kind"] == "train"] == list(range(1, 25))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_final_checkpoint_and_exits_cleanly(tmp_path, sig):
    proc = _cli(*SMOKE_RUN, "--set", "checkpoint_every=100", "--out", str(tmp_path))
    _wait_for(tmp_path / "metrics.jsonl", proc)
    while not (tmp_path / "metrics.jsonl").read_text().strip():
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (out, err)
    assert "Traceback" not in err and f"{signal.Signals(sig).name} received" in out
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert 1 <= state["step"] < 24
    logged = [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "train"]
    assert logged[-1] == state["step"], "the checkpoint holds the last logged step"


def test_a_sigterm_to_the_whole_process_group_stops_the_run_and_its_loader_workers(tmp_path):
    # A scheduler or a terminal signals the group: the workers leave the stop to the training process,
    # which writes its checkpoint, says so in one line and takes its workers down with it.
    proc = _cli(*SMOKE_RUN, "--set", "num_workers=2", "--set", "checkpoint_every=100", "--out", str(tmp_path),
                start_new_session=True)
    _wait_for(tmp_path / "metrics.jsonl", proc)
    while not (tmp_path / "metrics.jsonl").read_text().strip():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "Traceback" not in err and "SIGTERM received" in out, (out, err)
    assert 1 <= load_checkpoint(tmp_path / "checkpoint.pt")["step"] < 24
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anything of the group still alive?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a data-loader worker outlived the run")


def _poisoned_objective(bad_step, term="1t7"):
    calls = {"n": 0}
    real = train_module.objective

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == bad_step:
            out[term] = out[term] * float("nan")
            out["loss"] = out["loss"] + out[term]
        return out
    return poisoned


def test_a_non_finite_loss_stops_with_the_step_and_term_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = get_config("shapes", "smoke", train_size=64, batch_size=16, epochs=1, checkpoint_every=1)
    monkeypatch.setattr(train_module, "objective", _poisoned_objective(3))
    with pytest.raises(FloatingPointError, match=r"step 3.*1t7"):
        train(config, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_a_non_finite_loss_can_be_skipped(tmp_path, monkeypatch):
    config = get_config("shapes", "smoke", train_size=64, batch_size=16, epochs=1, on_nonfinite="skip")
    monkeypatch.setattr(train_module, "objective", _poisoned_objective(2))
    summary = train(config, tmp_path, progress=False)
    assert summary["finished"] and summary["skipped_steps"] == 1
    assert [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "skip"] == [2]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in state["encoder"].values())


def test_a_full_disk_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    save_run_checkpoint(tmp_path, {"step": 1, "w": torch.ones(3)})
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_run_checkpoint(tmp_path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file is left"


def test_a_full_disk_under_pytorchs_own_writer_is_an_os_error_and_the_message_says_how_to_go_on(tmp_path, monkeypatch):
    # PyTorch's zip writer reports a write that fails after its first record as a RuntimeError
    # ("unexpected pos ..."), which the run folder's OSError handling did not catch.
    save_run_checkpoint(tmp_path, {"step": 1, "w": torch.ones(3)})
    real_save = torch.save

    class FullAfterAFewBytes(io.RawIOBase):
        written = 0

        def writable(self):
            return True

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

    monkeypatch.setattr(checkpoints.torch, "save", lambda obj, f: real_save(obj, FullAfterAFewBytes()))
    with pytest.raises(OSError, match="PyTorch could not write the file"):
        save_run_checkpoint(tmp_path, {"step": 2, "w": torch.zeros(10_000)})
    with pytest.raises(RunFolderError, match=r"could not write .*checkpoint\.pt .*step 1.*--resume"):
        with writing(tmp_path / "checkpoint.pt", tmp_path):
            save_run_checkpoint(tmp_path, {"step": 2, "w": torch.zeros(10_000)})
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_resume_falls_back_to_an_older_checkpoint_when_the_newest_is_damaged(tmp_path):
    save_run_checkpoint(tmp_path, {"step": 1})
    save_run_checkpoint(tmp_path, {"step": 2})
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")  # the newest (and its hard link) damaged
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        assert latest_run_checkpoint(tmp_path)["step"] == 1
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"garbage", "only a resume (repair=True) touches the folder"


@pytest.mark.parametrize("damage", ["truncated", "folder"])
def test_a_resume_puts_the_checkpoint_it_resumed_from_in_place_of_a_damaged_one(tmp_path, damage):
    save_run_checkpoint(tmp_path, {"step": 1})
    newest = tmp_path / "checkpoint.pt"
    if damage == "truncated":
        save_run_checkpoint(tmp_path, {"step": 2})
        newest.write_bytes(newest.read_bytes()[:100])
    else:
        newest.unlink()
        newest.mkdir()
    with pytest.warns(UserWarning) as warned:
        assert latest_run_checkpoint(tmp_path, repair=True)["step"] == 1
    messages = [str(w.message) for w in warned]
    assert any("skipping unreadable checkpoint" in m for m in messages)
    assert any("was unreadable: moved to checkpoint.pt.unreadable; step-00000001.pt now stands in its place" in m
               for m in messages), messages
    assert load_checkpoint(newest)["step"] == 1, "the next eval reads what training resumed from"
    assert (tmp_path / "checkpoint.pt.unreadable").exists(), "the damaged file is kept aside, not deleted"


def _image_folder(root, n=3, size=36):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((size, size, 3), 50 * i, np.uint8)).save(root / split / c / f"{i}.png")


def test_corrupt_and_non_image_files_in_a_folder_data_set(tmp_path):
    _image_folder(tmp_path)
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = tmp_path / "train" / "b" / "0.png"
    (tmp_path / "train" / "b" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")  # not an image extension: ignored
    data = build_dataset("folder", "train", data_dir=tmp_path)
    assert len(data) == 8
    bad = [i for i, (p, _) in enumerate(data.samples) if "broken" in p or "truncated" in p]
    for i in bad:
        with pytest.raises(ValueError, match=r"cannot read image .*(broken\.jpg|truncated\.png).*skip_bad_images"):
            data[i]
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        checked = build_dataset("folder", "train", data_dir=tmp_path, skip_bad_images=True)
    assert len(checked) == 6 and len(checked.skipped) == 2
    assert all(checked[i][0].size == (36, 36) for i in range(len(checked)))


def test_fuzz_random_bytes_as_images(tmp_path):
    rng = random.Random(0)
    _image_folder(tmp_path, n=1)
    for i in range(40):
        suffix = rng.choice([".jpg", ".png", ".bmp", ".gif"])
        (tmp_path / "train" / "a" / f"fuzz{i}{suffix}").write_bytes(rng.randbytes(rng.randint(0, 300)))
    data = build_dataset("folder", "train", data_dir=tmp_path)
    for i in range(len(data)):
        try:
            image, _ = data[i]
            assert image.mode == "RGB"
        except ValueError as error:
            assert "cannot read image" in str(error)
    with pytest.warns(UserWarning):
        checked = build_dataset("folder", "train", data_dir=tmp_path, skip_bad_images=True)
    for i in range(len(checked)):
        checked[i]


FUZZ_VALUES = ["-1", "0", "1", "2", "3.5", "1e9", "-1e-9", "nan", "inf", "None", "True", "abc", "", "()", "1t7",
               "1,2", "[1, 2]", "{'a': 1}", "32", "64", "cpu", "'\\x00'", "1t5,9t9", "1" * 30]


def test_fuzz_cli_and_parameter_validation(capsys):
    rng = random.Random(0)
    import dataclasses
    from amdim_lib.run.presets import Config
    keys = [f.name for f in dataclasses.fields(Config)] + ["nonsense"]
    start = time.time()
    for _ in range(300):
        argv = ["train", "--preset", rng.choice(["smoke", "demo", "paper"]), "--print-config"]
        for _ in range(rng.randint(1, 3)):
            argv += ["--set", f"{rng.choice(keys)}={rng.choice(FUZZ_VALUES)}"]
        try:
            main(argv)
        except SystemExit as exit:
            assert str(exit.code).startswith(("error: invalid configuration", "--set expects")), (argv, exit.code)
        assert time.time() - start < 60
    # The notebooks call get_config with their parameters: bad values raise ValueError, nothing else.
    for _ in range(300):
        key = rng.choice([k for k in keys[:-1] if k != "dataset"])  # the data set is get_config's first argument
        value = rng.choice([-1, 0, 1, 2.5, float("nan"), None, True, "x", (), ("1t9",), [1], {"a": 1}])
        try:
            get_config("shapes", "smoke", **{key: value})
        except ValueError as error:
            assert "invalid configuration" in str(error)
    capsys.readouterr()


def test_thousands_of_loader_workers_are_lowered_to_the_usable_cpus_with_a_warning():
    from amdim_lib.run.build import make_loader, usable_cpus
    config = get_config("shapes", "smoke").replace(num_workers=5000)
    with pytest.warns(UserWarning, match=rf"num_workers=5000 lowered to {usable_cpus()}, the CPUs this process may use"):
        loader = make_loader(list(range(8)), config, torch.device("cpu"), batch_size=4)
    assert loader.num_workers == usable_cpus() < 5000
