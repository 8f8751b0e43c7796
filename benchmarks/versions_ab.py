"""Speed of this checkout's training step against another checkout's, alternated in one process.

    git worktree add ../amdim-before COMMIT
    python benchmarks/versions_ab.py ../amdim-before --preset paper [--amp off] [--rounds 5] [--steps 3]

The other checkout's `amdim_lib` is imported under another name (its imports are relative), both
steps are built at the same preset and batch on synthetic inputs (on the CPU), and they alternate
in one process (`amdim_lib.bench.alternate`) so that a shared machine's drift falls on both. Prints
each side's s/step per round and the ratio of medians (other / this: above 1 means this checkout is
faster). Set the ISA caps of benchmarks/isa_table.py in the environment to measure at AVX2.
Process-wide settings apply to both sides (the freed memory that `train.prepare_device` keeps on
the CPU, once either side has set it): compare such a setting by toggling it in one process instead.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from amdim_lib.bench import alternate


def stepper(package: str, preset: str, batch_size: int, amp: str):
    presets, bench, train = (importlib.import_module(f"{package}.{name}") for name in ("presets", "bench", "train"))
    config = presets.get_config("shapes", preset, batch_size=batch_size, amp=amp)
    state, runtime = bench._training_state(config)
    batch = bench._synthetic_batch(config)
    return lambda: train.train_step(state, *batch, config, runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="another checkout of this project (a folder holding amdim_lib/)")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--amp", default="auto", help="precision of both steps (auto, off, bf16, ...)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per side and round")
    args = parser.parse_args()
    if not (args.other / "amdim_lib" / "train.py").is_file():
        raise SystemExit(f"{args.other} has no amdim_lib/run/train.py: give the folder of another checkout")
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(args.other / "amdim_lib", Path(scratch) / "amdim_other")
        sys.path.insert(0, scratch)
        sides = {"other": stepper("amdim_other", args.preset, args.batch_size, args.amp),
                 "this": stepper("amdim_lib", args.preset, args.batch_size, args.amp)}
        per_round = alternate(torch.device("cpu"), list(sides.values()), args.rounds, args.steps, warmup=3)
        times = dict(zip(sides, per_round))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:5s} s/step per round: {' '.join(f'{x:.3f}' for x in t)} (median {medians[name]:.3f})")
    print(f"{args.preset}, batch {args.batch_size}, amp={args.amp}: other / this = {medians['other'] / medians['this']:.2f}x")


if __name__ == "__main__":
    main()
