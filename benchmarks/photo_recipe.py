"""The photograph recipe: the trials that chose it, and its committed result. The recipe is the demo
preset of the photograph data sets (folder, cifar10, cifar100: `presets.PRESETS[...]["demo"]`, about 10
minutes of training on a 2-core CPU), trained on a CIFAR-10 image folder and probed frozen beside the
untrained encoder and raw pixels.

    python benchmarks/photo_recipe.py --data-dir ../shared/data/cifar10-subset --validation --out runs/trial-a
    python benchmarks/photo_recipe.py --data-dir ../shared/data/cifar10-subset --validation --out runs/trial-b \
        --set lr=2e-3
    python benchmarks/photo_recipe.py --data-dir ../shared/data/cifar10-subset

With --validation a candidate trains on 80 % of each class's training images and is scored on the rest;
the trial is appended to benchmarks/results/photo-recipe-trials.jsonl. Without it, the preset as it stands
is measured on the test split and written to amdim_lib/analysis/photo_result.json, which notebook 05 shows
beside a run (`results.photo_result`), labelled with its model size and budget. The folder is an argument:
the project never depends on it. Trials and choice: benchmarks/LOG.md, "Photograph recipe".
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


def validation_folder(source: Path, target: Path, share: float = 0.2) -> Path:
    """An image folder of links into `source`'s training images only: per class, the last `share` of
    the sorted files become test/, the rest train/. Choosing a recipe on it never reads the test split."""
    for class_dir in sorted(p for p in (source / "train").iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        cut = len(files) - round(share * len(files))
        for split, chosen in (("train", files[:cut]), ("test", files[cut:])):
            (target / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for file in chosen:
                link = target / split / class_dir.name / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())
    return target


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
    parser.add_argument("--validation", action="store_true",
                        help="choose, don't measure: train on 80%% of each class's training images and score the rest "
                             "(the test split is not read); one JSON line is appended to --log")
    parser.add_argument("--set", nargs="*", default=[], help="a candidate's overrides, e.g. lr=2e-3")
    parser.add_argument("--log", default="benchmarks/results/photo-recipe-trials.jsonl")
    args = parser.parse_args()
    data_dir = validation_folder(Path(args.data_dir), Path(args.out + "-data")) if args.validation else args.data_dir
    cli = [sys.executable, "-m", "amdim_lib"]
    overrides = [item for pair in args.set for item in ("--set", pair)]
    start = time.perf_counter()
    subprocess.run(cli + ["train", "--dataset", "folder", "--data-dir", str(data_dir), "--preset", "demo",
                          "--set", f"seed={args.seed}", *overrides, "--out", args.out, "--no-progress"], check=True)
    seconds = round(time.perf_counter() - start)  # the whole command: data loading and start-up included
    out = Path(args.out)
    baselines = ["--no-baselines"] if args.validation else []  # choosing compares candidates, not baselines
    subprocess.run(cli + ["eval", "--checkpoint", str(out / "checkpoint.pt"), *baselines], check=True)
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
    if args.validation:
        result.update(split="validation: 20 % of each class's training images", overrides=args.set)
        with open(args.log, "a") as log:
            log.write(json.dumps(result) + "\n")
    else:
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
