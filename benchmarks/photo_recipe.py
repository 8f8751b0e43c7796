"""The photograph recipe's committed result: the demo preset of the photograph data sets (folder,
cifar10, cifar100: `presets.PRESETS[...]["demo"]`, about 10 minutes of training on a 2-core CPU) trained
on a CIFAR-10 image folder, then probed frozen beside the untrained encoder and raw pixels.

    python benchmarks/photo_recipe.py --data-dir ../shared/data/cifar10-subset

Writes amdim_lib/analysis/photo_result.json, which notebook 05 and the report show beside a run
(`results.photo_result`), labelled with its model size and budget. The folder is an argument: the
project never depends on it. Trials behind the recipe: benchmarks/LOG.md, "Photograph recipe".
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULT = Path(__file__).resolve().parents[1] / "amdim_lib" / "analysis" / "photo_result.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision(amp: str) -> str:
    """What `amp` resolves to on this machine's CPU: the training's number format."""
    from amdim_lib.run.speed import autocast_dtype
    dtype = autocast_dtype(amp, torch.device("cpu"))
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="an image folder of CIFAR-10: train/<class>/, test/<class>/")
    parser.add_argument("--out", default="runs/photo-recipe", help="the run folder (a new one: an existing run is refused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", default=str(RESULT))
    args = parser.parse_args()
    cli = [sys.executable, "-m", "amdim_lib"]
    start = time.perf_counter()
    subprocess.run(cli + ["train", "--dataset", "folder", "--data-dir", args.data_dir, "--preset", "demo",
                          "--set", f"seed={args.seed}", "--out", args.out, "--no-progress"], check=True)
    seconds = round(time.perf_counter() - start)  # the whole command: data loading and start-up included
    out = Path(args.out)
    subprocess.run(cli + ["eval", "--checkpoint", str(out / "checkpoint.pt")], check=True)
    config = json.loads((out / "config.json").read_text())
    evaluation = json.loads((out / "eval.json").read_text())
    train_records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = {
        "data": f"CIFAR-10 photographs (image folder {Path(args.data_dir).name})",
        "command": "python benchmarks/photo_recipe.py --data-dir " + args.data_dir,
        "preset": "demo", "seed": args.seed,
        "model": {key: config[key] for key in ("ndf", "n_rkhs", "n_depth", "image_size")},
        "updates": max(r["step"] for r in train_records), "batch_size": config["batch_size"],
        "train_seconds": seconds, "cpu": cpu_name(), "torch": torch.__version__, "precision": precision(config["amp"]),
        "accuracy": {name: {probe: round(value, 4) for probe, value in probes.items()} for name, probes in evaluation.items()},
    }
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
