"""Trials of the Shapes scene design (issue #32), scored on a validation split, never the test split.

One trial trains the demo recipe (`get_config("shapes", "demo")`) on Shapes drawn with one `Scene`, then
fits the linear probe and kNN on frozen r1 features of 2,000 training images and scores them on the
2,000 training-split images that follow the training range (never trained on; the test split is not
read). The untrained encoder and raw pixels are scored the same way. One JSON line per trial is printed
and appended to --log.

    python benchmarks/shapes_design.py --name upright --seed 0 --scene tilt=0 grating=0 blotches=0
    python benchmarks/shapes_design.py --name earlier --seed 0 --scene tilt=180 "span=(0.4, 0.7)" grating=1 blotches=0.35
    python benchmarks/shapes_design.py --name more-data --seed 0 --set train_size=30000 epochs=2 "milestones=()"

Results and the choice they led to: benchmarks/LOG.md, "Shapes scene design".
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import tempfile
import time

import torch

import amdim_lib.data.shapes as shapes
from amdim_lib.analysis.evaluate import extract_features, knn_accuracy, linear_probe
from amdim_lib.official import load_encoder
from amdim_lib.run.build import build_encoder, eval_dataset
from amdim_lib.run.presets import get_config
from amdim_lib.run.train import train


def pairs(texts: list[str]) -> dict:
    """key=value words, each value a Python literal."""
    out = {}
    for text in texts:
        key, _, value = text.partition("=")
        out[key] = ast.literal_eval(value)
    return out


def trial(scene: shapes.Scene, seed: int, overrides: dict, n_probe: int = 2000) -> dict:
    """Validation accuracies (%) of the trained encoder, the untrained one and raw pixels."""
    shapes.DEFAULT_SCENE = scene  # what build_dataset's Shapes draw, for this process
    config = get_config("shapes", "demo", seed=seed, **overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train(config, run_dir, progress=False)
        seconds = time.perf_counter() - start
        encoder, _ = load_encoder(f"{run_dir}/checkpoint.pt")
    # Indices below train_size were trained on; the next n_probe are the validation images.
    images = shapes.Shapes("train", config.image_size, size=config.train_size + n_probe, seed=seed)
    probe_train = eval_dataset(torch.utils.data.Subset(images, range(n_probe)), config)
    validation = eval_dataset(torch.utils.data.Subset(images, range(config.train_size, config.train_size + n_probe)), config)
    torch.manual_seed(seed)
    scores = {}
    for name, features_of in (("trained", encoder), ("random init", build_encoder(config)), ("raw pixels", None)):
        train_x, train_y = extract_features(features_of, probe_train)
        test_x, test_y = extract_features(features_of, validation)
        scores[name] = {"linear": round(100 * linear_probe(train_x, train_y, test_x, test_y, seed=seed)["accuracy"], 1),
                        "knn": round(100 * knn_accuracy(train_x, train_y, test_x, test_y), 1)}
    return {"train_seconds": round(seconds), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="what this trial changes, for the log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scene", nargs="*", default=[], help="Scene fields, e.g. tilt=0 'span=(0.6, 0.9)'")
    parser.add_argument("--set", nargs="*", default=[], help="demo configuration overrides, e.g. train_size=30000")
    parser.add_argument("--log", default="benchmarks/results/shapes-design-trials.jsonl")
    args = parser.parse_args()
    scene = dataclasses.replace(shapes.Scene(), **pairs(args.scene))
    overrides = pairs(args.set)
    line = {"name": args.name, "seed": args.seed, "scene": dataclasses.asdict(scene), "overrides": overrides,
            "torch": torch.__version__, **trial(scene, args.seed, overrides)}
    print(json.dumps(line))
    with open(args.log, "a") as log:
        log.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
