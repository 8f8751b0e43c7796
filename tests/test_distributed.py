"""Data-parallel training: torchrun with 2 CPU processes (gloo) equals one process on the global batch."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from amdim_lib.run.checkpoints import load_checkpoint
from amdim_lib.run.runfolder import RunFolder

# Two steps of a global batch of 16: dropout off so that both runs draw the same random numbers, and
# float32 (amp=auto is bf16 on some CPUs, whose rounding differs between one batch and two halves).
RUN = ["-m", "amdim_lib", "train", "--preset", "smoke", "--no-progress", "--set", "train_size=32",
       "--set", "batch_size=16", "--set", "epochs=1", "--set", "probe_dropout=0.0", "--set", "warmup_steps=0",
       "--set", "amp=off"]


def _torchrun(*args):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]  # no library warning on every rank's every step
    return run


def _train_records(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def _single_and_ddp(tmp_path, run):
    single = subprocess.run([sys.executable, *run, "--out", str(tmp_path / "single")], capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr
    _torchrun(*run, "--out", str(tmp_path / "ddp"))
    a = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert a["step"] == b["step"] == 2
    return a, b, [_train_records(tmp_path / d) for d in ("single", "ddp")]


def _assert_same_updates(a, b, parts, lr=2e-4, steps=2):
    # Adam divides by the root of the squared gradient: where a gradient is ~0, summation-order noise
    # can flip an update of size lr. So: nearly every weight agrees to 1e-6, none differs by more
    # than two full steps, and the agreement is far tighter than the size of the updates themselves.
    diffs = torch.cat([(a[p][n].float() - b[p][n].float()).flatten() for p in parts for n in a[p]])
    assert diffs.abs().max() <= 2 * lr * steps + 1e-6
    assert (diffs.abs() > 1e-6).float().mean() < 0.01


def test_two_process_ddp_steps_equal_single_process_steps(tmp_path):
    a, b, losses = _single_and_ddp(tmp_path, RUN)
    _assert_same_updates(a, b, ("encoder", "probes"))
    for ra, rb in zip(*losses):
        for key in ("loss", "1t5", "1t7", "5t5", "reg", "probe_linear_loss"):
            assert abs(ra[key] - rb[key]) < 1e-4, (key, ra[key], rb[key])
    # Rank 0 alone writes the TensorBoard events: one events file, each logged step once.
    event_files = list((tmp_path / "ddp" / RunFolder.TENSORBOARD).glob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
    events = EventAccumulator(str(tmp_path / "ddp" / RunFolder.TENSORBOARD))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in losses[1]] == [1, 2]


def test_mixture_trains_data_parallel_like_one_process(tmp_path):
    """With mixture_k, the head runs inside DDP's forward (its gradients are averaged like the encoder's)
    and the mixture's negatives are gathered from both ranks: two processes equal one."""
    a, b, losses = _single_and_ddp(tmp_path, [*RUN, "--set", "mixture_k=3"])
    assert set(a["mixture"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    _assert_same_updates(a, b, ("encoder", "probes", "mixture"))
    for ra, rb in zip(*losses):
        for key in ("loss", "1t5", "mix", "entropy", "5t5", "reg"):
            assert abs(ra[key] - rb[key]) < 1e-4, (key, ra[key], rb[key])
        assert ra["usage"] == pytest.approx(rb["usage"], abs=1e-4)  # shares over the global batch


def test_ddp_run_stopped_after_one_step_resumes_on_every_rank_to_the_same_weights(tmp_path):
    """Rank 0 alone writes the checkpoint and the log; after a stop, both ranks load it and carry on
    exactly as an uninterrupted two-process run. Three steps, so that a rank that did not restore its
    own state (optimiser moments, sampler position) would change the last step's shared gradient."""
    run = [*RUN, "--set", "train_size=48"]
    _torchrun(*run, "--out", str(tmp_path / "straight"))
    script = tmp_path / "stop_after_one.py"
    script.write_text("import json, sys\nfrom pathlib import Path\nfrom amdim_lib.run.presets import Config\n"
                      "from amdim_lib.run.train import train\n"
                      "config = Config.from_dict(json.loads(Path(sys.argv[1]).read_text()))\n"
                      "train(config, sys.argv[2], stop_at_step=1, progress=False)\n")
    resumed = tmp_path / "resumed"
    _torchrun(str(script), str(tmp_path / "straight" / "config.json"), str(resumed))
    assert load_checkpoint(resumed / "checkpoint.pt")["step"] == 1
    _torchrun(*run, "--out", str(resumed), "--resume")
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(resumed / "checkpoint.pt")
    assert a["step"] == b["step"] == 3
    for part in ("encoder", "probes"):
        for name in a[part]:
            torch.testing.assert_close(b[part][name], a[part][name], rtol=0, atol=1e-6, msg=f"{part}.{name}")
    # One line per step: the second rank wrote nothing, and the resumed log continues the first.
    assert [r["step"] for r in _train_records(resumed)] == [r["step"] for r in _train_records(tmp_path / "straight")] \
        == [1, 2, 3]


def test_two_processes_train_under_bf16_autocast(tmp_path):
    """Synchronised batch norm takes bf16 activations (its statistics in float32) and the run matches
    one process to bf16's precision."""
    run = [*RUN[:-2], "--set", "amp=bf16"]
    a, b, losses = _single_and_ddp(tmp_path, run)
    for ra, rb in zip(*losses):
        assert abs(ra["loss"] - rb["loss"]) < 0.05 * abs(ra["loss"]), (ra["loss"], rb["loss"])
    for name, tensor in a["encoder"].items():
        assert torch.isfinite(b["encoder"][name]).all(), name


def test_torchrun_with_one_process_takes_the_ddp_path(tmp_path):
    script = tmp_path / "context.py"
    script.write_text("from amdim_lib.run import distributed\nc = distributed.setup('cpu')\nprint(c.enabled, c.world_size)\n")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(script)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # (also uninstalled)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["True", "1"]


def test_a_rank_that_dies_is_named_in_one_line_with_the_checkpoint_to_resume_from(tmp_path):
    # Rank 1 vanishes (as if killed) before its fourth update; rank 0's next collective fails.
    script = tmp_path / "die.py"
    script.write_text("import os, sys\nimport amdim_lib.run.train as loop\nfrom amdim_lib.__main__ import main\n"
                      "real = loop.train_step\n"
                      "def step(state, *args, **kwargs):\n"
                      "    if os.environ['RANK'] == '1' and state.step == 3:\n        os._exit(9)\n"
                      "    return real(state, *args, **kwargs)\n"
                      "loop.train_step = step\nsys.exit(main(sys.argv[1:]))\n")
    args = [a for a in RUN if a != "-m" and a != "amdim_lib"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), *args, "--set", "train_size=96", "--set", "checkpoint_every=2",
                          "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: rank 0: rank 1 of this run stopped")]
    assert len(lines) == 1, run.stderr[-3000:]
    assert "the last checkpoint is" in lines[0] and "--resume" in lines[0]
    # torchrun's own launcher still reports the failed child; no traceback comes from the run's processes.
    assert not re.search(r'File ".*(amdim_lib|die\.py)', run.stderr), run.stderr[-3000:]
