"""Memory of one data-loader worker: the figure behind `run.memory.WORKER_BYTES`.

Starts the demo configuration's training loader with two workers, draws a few batches, and reads each
worker's proportional set size (PSS: its private pages plus its share of those it shares with the
training process after the fork) from /proc. Linux only.

    python benchmarks/worker_memory.py [--dataset shapes] [--workers 2]
"""

import argparse
import re
from pathlib import Path

import torch

from amdim_lib.run.build import build_data
from amdim_lib.run.memory import WORKER_BYTES
from amdim_lib.run.presets import get_config
from amdim_lib.run.train import epoch_loader


def mebibytes(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = get_config(args.dataset, "demo").replace(num_workers=args.workers)
    pairs, _, _ = build_data(config)
    _, loader = epoch_loader(pairs, config, torch.device("cpu"))
    batches = iter(loader)
    for _ in range(10):
        next(batches)
    for worker in batches._workers:
        print(f"worker {worker.pid}: PSS {mebibytes(worker.pid, 'Pss'):.0f} MiB, "
              f"RSS {mebibytes(worker.pid, 'Rss'):.0f} MiB")
    print(f"run.memory.WORKER_BYTES = {WORKER_BYTES / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
