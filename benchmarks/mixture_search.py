"""Search of mixture settings on Shapes: which training makes the mixture's segments beat k-means?

    python benchmarks/mixture_search.py --out results/ [--small] [--parallel 8]

Each candidate (model size, updates, tau, alpha, augmentation) trains a k=4 mixture model with
`amdim_lib.core.mixture.train_mixture` in its own process and run folder under <out>/runs/ (several at once:
one GPU, many data workers; a folder holding the same run is reused or resumed),
then scores the best-matching-component IoU of its 28x28 assignment maps on 96 Shapes test images,
exactly as notebook 07 does; the baselines (k-means on a random-init encoder's r7, per image as in
notebook 07 and over the data set; centre blob) are scored once. Results: <out>/mixture_search.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
import time
from pathlib import Path

import numpy as np
import torch

from amdim_lib.analysis import segmentation
from amdim_lib.run.build import build_encoder
from amdim_lib.run.presets import MODEL_SIZES, get_config, workbook_sizes

NOTEBOOK_07 = {"demo": workbook_sizes("07", "demo"), "smoke": workbook_sizes("07", "smoke")}
SMALL_MODEL = MODEL_SIZES["small"]   # notebook 07's demo model
DEMO_MODEL = MODEL_SIZES["demo"]     # the demo preset's model
CANDIDATES = {  # (updates: --steps overrides every candidate's)
    "07 demo settings, 250 steps": dict(model=SMALL_MODEL, steps=NOTEBOOK_07["demo"]["steps"]),
    "07 demo settings": dict(model=SMALL_MODEL, steps=1000),
    "full augmentation": dict(model=SMALL_MODEL, steps=1000, augment="full"),
    "tau 3": dict(model=SMALL_MODEL, steps=1000, tau=3.0),
    "alpha 0": dict(model=SMALL_MODEL, steps=1000, alpha=0.0),
    "alpha 0.5": dict(model=SMALL_MODEL, steps=1000, alpha=0.5),
    "demo model": dict(model=DEMO_MODEL, steps=1000),
}


def config_for(candidate: dict, seed: int, small: bool):
    """Notebook 07's demo training with the candidate's model and augmentation (--small: the smoke model
    on fewer images)."""
    settings = dict(NOTEBOOK_07["demo"]["model"], test_size=64, augment=candidate.get("augment", "crop"),
                    **candidate["model"])
    if small:
        settings.update(MODEL_SIZES["smoke"], train_size=256, batch_size=32)
    return get_config("shapes", "smoke", seed=seed, **settings)


def evaluation_data(image_size: int, seed: int, small: bool):
    sizes = NOTEBOOK_07["smoke" if small else "demo"]
    n, bank = sizes["eval_images"], sizes["bank"]
    x, masks, _ = segmentation.shapes_batch("test", n, image_size, seed=seed)
    x_bank = segmentation.shapes_batch("test", bank, image_size, seed=seed, start=n)[0]
    return x, masks, x_bank


def run_candidate(args):
    name, candidate, seed, small, device, parallel, run_dir = args
    if parallel > 1:
        torch.set_num_threads(1)  # several candidates share the cores
    config = config_for(candidate, seed, small).replace(device=device, mixture_k=4, mixture_tau=candidate.get("tau", 1.0),
                                                        mixture_alpha=candidate.get("alpha", 0.1))
    start = time.perf_counter()
    model = segmentation.train_mixture(config, run_dir / f"{name.replace(' ', '_')}-seed{seed}",
                                  steps=NOTEBOOK_07["smoke"]["steps"] if small else candidate["steps"])
    x, masks, x_bank = evaluation_data(config.image_size, seed, small)
    bank = segmentation.negative_bank(model.encoder, x_bank)
    fine = segmentation.evaluate_segmentation(model, x, masks, bank, shifts=4)
    coarse = segmentation.evaluate_segmentation(model, x, masks, bank, shifts=1)
    km_trained = segmentation.segmentation_ious(segmentation.kmeans_labels(model.encoder, x, 4, 4, seed=seed), masks, 4)
    return {"name": name, **{k: v for k, v in candidate.items() if k != "model"}, "model": candidate["model"],
            "iou_28": fine["mean"], "iou_7": coarse["mean"], "kmeans_trained_iou_28": float(km_trained.mean()),
            "last": model.history[-1], "seconds": round(time.perf_counter() - start, 1)}


def baselines(seed: int, small: bool) -> dict:
    out = {}
    for label, model in (("small model", SMALL_MODEL), ("demo model", DEMO_MODEL)):
        config = config_for({"model": model}, seed, small)
        x, masks, _ = evaluation_data(config.image_size, seed, small)
        torch.manual_seed(seed)
        encoder = build_encoder(config).eval()
        for per_image, over in ((True, ""), (False, " over the data set")):
            out[f"k-means{over} random init ({label}), 28x28"] = float(segmentation.segmentation_ious(
                segmentation.kmeans_labels(encoder, x, 4, 4, seed=seed, per_image=per_image), masks, 4).mean())
    _, train_masks, _ = segmentation.shapes_batch("train", 200, 32, seed=seed)
    blob = segmentation.centre_blob(32, segmentation.fit_centre_blob(train_masks))
    out["centre blob"] = float(np.mean([segmentation.iou(blob, m) for m in masks]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mixture-search")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--parallel", type=int, default=len(CANDIDATES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="updates for every candidate (default: each candidate's own)")
    parser.add_argument("--only", nargs="+", help="candidate names to run (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, dict(c, **({"steps": args.steps} if args.steps else {})), args.seed, args.small, args.device,
             args.parallel, out / "runs")
            for name, c in CANDIDATES.items() if not args.only or name in args.only]
    results = {"baselines": baselines(args.seed, args.small), "candidates": []}
    print(json.dumps(results["baselines"]), flush=True)
    # (An executor, not a Pool: its processes may start data-loader workers of their own.)
    with ProcessPoolExecutor(args.parallel, mp_context=mp.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_candidate, job) for job in jobs]):
            result = future.result()
            results["candidates"].append(result)
            print(f"{result['name']}: IoU 28x28 {result['iou_28']:.3f}, 7x7 {result['iou_7']:.3f}, "
                  f"k-means on trained {result['kmeans_trained_iou_28']:.3f} ({result['seconds']} s)", flush=True)
            (out / "mixture_search.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
