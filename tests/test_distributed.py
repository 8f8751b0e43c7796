"""Data-parallel training: torchrun with 2 CPU processes (gloo) equals one process on the global batch."""

import socket
import subprocess
import sys

import torch

from amdim_lib.checkpoints import load_checkpoint

# Two steps of a global batch of 16: dropout off so that both runs draw the same random numbers.
RUN = ["-m", "amdim_lib", "train", "--preset", "smoke", "--no-progress", "--set", "train_size=32",
       "--set", "batch_size=16", "--set", "epochs=1", "--set", "probe_dropout=0.0", "--set", "warmup_steps=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_steps_equal_single_process_steps(tmp_path):
    single = subprocess.run([sys.executable, *RUN, "--out", str(tmp_path / "single")], capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *RUN,
                          "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert a["step"] == b["step"] == 2
    # Adam divides by the root of the squared gradient: where a gradient is ~0, summation-order noise
    # can flip an update of size lr. So: nearly every weight agrees to 1e-6, none differs by more
    # than two full steps, and the agreement is far tighter than the size of the updates themselves.
    lr, steps = 2e-4, 2
    diffs = torch.cat([(a[p][n].float() - b[p][n].float()).flatten() for p in ("encoder", "probes") for n in a[p]])
    assert diffs.abs().max() <= 2 * lr * steps + 1e-6
    assert (diffs.abs() > 1e-6).float().mean() < 0.01
    losses = [[r for r in map(__import__("json").loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "train"] for d in ("single", "ddp")]
    for ra, rb in zip(*losses):
        for key in ("loss", "1t5", "1t7", "5t5", "reg", "probe_linear_loss"):
            assert abs(ra[key] - rb[key]) < 1e-4, (key, ra[key], rb[key])
