"""The speed switches change how training runs, never what it computes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from amdim_lib.bench import bench_end_to_end
from amdim_lib.checkpoints import load_checkpoint
from amdim_lib.presets import get_config
from amdim_lib.train import Runtime, build_state, train, train_step


def _one_step(config):
    torch.manual_seed(0)
    state = build_state(config.replace(probe_dropout=0.0), 10, torch.device("cpu"), 1)
    state.nce_rng = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    losses, _, _ = train_step(state, x1, x2, y, config, Runtime(torch.device("cpu")))
    encoder = state.encoder
    return losses, encoder


def test_channels_last_computes_the_same_step():
    config = get_config("shapes", "smoke", warmup_steps=0)
    nhwc_losses, nhwc = _one_step(config.replace(channels_last=True))
    nchw_losses, nchw = _one_step(config.replace(channels_last=False))
    assert next(nhwc.parameters()).is_contiguous(memory_format=torch.channels_last)
    for key in nchw_losses:
        assert abs(nhwc_losses[key].item() - nchw_losses[key].item()) < 1e-4, key
    # Gradients, not updated weights: Adam's first step moves every weight by about lr whatever the
    # gradient's size, so summation-order noise on a near-zero gradient would flip a whole update.
    # (Compared as one vector: some biases have gradients at the level of float32 summation noise.)
    a = torch.cat([p.grad.flatten() for p in nhwc.parameters()])
    b = torch.cat([p.grad.flatten() for p in nchw.parameters()])
    assert (a - b).norm() < 1e-4 * b.norm()


def test_persistent_data_workers_feed_the_same_batches(tmp_path):
    # Views are seeded per item, so a worker process yields exactly what the main process would,
    # and one loader (with persistent workers) serves every epoch.
    config = get_config("shapes", "smoke", train_size=64, test_size=32, batch_size=16, epochs=2, probe_dropout=0.0)
    train(config, tmp_path / "main", progress=False)
    train(config.replace(num_workers=1), tmp_path / "worker", progress=False)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("main", "worker"))
    assert a["step"] == b["step"] == 8
    for name, tensor in a["encoder"].items():
        assert torch.equal(tensor, b["encoder"][name]), name


def test_end_to_end_benchmark_reads_the_real_pipeline():
    result = bench_end_to_end(get_config("shapes", "smoke", train_size=32 * 2), steps=2, warmup=1, epochs=2)
    assert result["num_workers"] == 0 and result["batch_views"]
    for part in ("first_epoch", "later_epochs"):
        assert result[part]["seconds_per_step"] > 0 and result[part]["synthetic_seconds_per_step"] > 0


def test_torchrun_with_one_process_takes_the_ddp_path(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "context.py"
    script.write_text("from amdim_lib import distributed\nc = distributed.setup('cpu')\nprint(c.enabled, c.world_size)\n")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                          f"--master_port={port}", str(script)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # (also uninstalled)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["True", "1"]
