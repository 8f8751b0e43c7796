"""Frozen reference data from the official AMDIM code, for tests/test_official.py.

    python benchmarks/official_reference.py OFFICIAL_DIR [--out tests/data/official]

OFFICIAL_DIR is a local copy of the official code (github.com/Philip-Bachman/amdim-public, written
against commit 8754ae1); only its model.py, costs.py, utils.py and mixed_precision.py are imported.
The tests never need it: they read the files this script writes.

The official code targets PyTorch 1.x on CUDA with NVIDIA apex; it runs unmodified on a CPU with
current PyTorch under the shims of `amdim_lib.official_code` (active only while it runs).

What it writes (about 2 MB):
- `<case>.pth` per small model (`CASES`: 32 px with use_bn off and on, 128 px with use_bn on): the
  official checkpoint format, {'model': Model.state_dict(), 'hyperparams': ..., 'cursor': ...}, as
  the official Checkpointer saves it (the probes' weights only in `WITH_PROBES`, for size). One is
  written in PyTorch's legacy (non-zip) serialisation: the 2019 releases predate the zip format
  (PyTorch 1.6). Before saving, the batch-norm affine parameters are randomised and
  a few training-mode forward passes on random data move the running statistics far from their
  initial 0 and 1, so that a loader that mixed up any statistics would show it.
- `reference.pt`: fixed uint8 inputs per image size (`PIXELS_TO_INPUTS` turns them into floats);
  per case, the encoder's r1, r5, r7 in eval mode, and two views encoded in training mode as the
  official training step does (one call per view), with their features and the running statistics
  afterwards; and the official multiscale NCE loss (LossMultiNCE, tclip 20 and 10) on fixed
  features, with the seed and the 5x5 source locations it drew; and the official online classifiers'
  loss (costs.loss_xent) on fixed logits and labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from amdim_lib.official_code import import_official, official_shims

ROOT = Path(__file__).resolve().parents[1]
# name: the official Model's arguments (n_classes 10 for the probes it carries). Widths are tiny so
# that the files stay small: 128 px models have 8 * ndf local channels, 32 px ones 4 * ndf.
CASES = {
    "official-32px-nobn": dict(encoder_size=32, ndf=8, n_rkhs=64, n_depth=2, use_bn=False),
    "official-32px-bn": dict(encoder_size=32, ndf=8, n_rkhs=64, n_depth=3, use_bn=True),
    "official-128px-bn": dict(encoder_size=128, ndf=4, n_rkhs=32, n_depth=2, use_bn=True),
}
LEGACY_FORMAT = "official-32px-nobn"
WITH_PROBES = "official-128px-bn"  # the other files leave out the probes' weights ('evaluator.*'), for size
BATCH = {32: 3, 128: 2}  # images per view
# Fixed inputs are stored as uint8 pixels p; the encoders read (p - 127.5) / 64, exact in float32.
PIXELS_TO_INPUTS = (127.5, 64.0)
LOSS_BATCH = 6     # images per view for the loss reference
LOSS_RKHS = 32
LOSS_SEED = 1234   # the global RNG seed just before the official loss draws its 5x5 locations


def _randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=generator))


def _images(generator: torch.Generator, size: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    return shift + scale * torch.randn(BATCH[size], 3, size, size, generator=generator)


def fixed_pixels(size: int) -> dict[str, torch.Tensor]:
    """The fixed uint8 inputs at one image size: `eval`, and the two training views `x1`, `x2`."""
    generator = torch.Generator().manual_seed(size)
    return {name: torch.randint(0, 256, (BATCH[size], 3, size, size), generator=generator, dtype=torch.uint8)
            for name in ("eval", "x1", "x2")}


def as_inputs(pixels: torch.Tensor) -> torch.Tensor:
    offset, scale = PIXELS_TO_INPUTS
    return (pixels.float() - offset) / scale


def _running_statistics(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def make_case(model_module, seed: int, pixels: dict[str, torch.Tensor], keep_probes: bool,
              **hyperparams) -> tuple[dict, dict]:
    """(official checkpoint, reference outputs on the fixed `pixels`) of one small official model."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = model_module.Model(n_classes=10, tclip=20.0, **hyperparams)
    _randomise_batch_norms(model, generator)
    size = hyperparams["encoder_size"]
    model.train()
    with torch.no_grad():
        for _ in range(8):  # training steps' forward passes: running statistics move away from 0 and 1
            model(_images(generator, size, 0.5, 2.0), _images(generator, size, -0.3, 1.5))
    weights = {k: v.clone() for k, v in model.state_dict().items() if keep_probes or not k.startswith("evaluator.")}
    checkpoint = {"model": weights, "hyperparams": dict(model.hyperparams),
                  "cursor": {"info_epoch": 1, "info_step": 8, "classifier_epoch": 0, "classifier_step": 0}}
    encoder = model.encoder  # (nn.DataParallel: on a CPU it calls the encoder itself)
    model.eval()
    with torch.no_grad():
        r1, r5, r7 = encoder(as_inputs(pixels["eval"]))
    model.train()
    with torch.no_grad():  # as the official training step: one encoder call per view
        trained = [encoder(as_inputs(pixels[view])) for view in ("x1", "x2")]
    reference = {"r1": r1, "r5": r5, "r7": r7,
                 "train": {"features": [dict(zip(("r1", "r5", "r7"), f)) for f in trained],
                           "running_statistics": _running_statistics(encoder.module)}}
    return checkpoint, reference


def make_loss_reference(costs_module, n_rkhs: int = LOSS_RKHS) -> dict:
    """The official LossMultiNCE on fixed features of two views of the same images, at tclip 20 and 10."""
    generator = torch.Generator().manual_seed(7)
    # Every feature of image i, global or local, in either view, is a shared vector c_i plus noise, so
    # that positive scores average |c_i|^2 / sqrt(n_rkhs) = 1.6^2 * sqrt(32) ~ 14, above most negatives:
    # the clip at 10 bends most positives, the one at 20 only the largest.
    shared = 1.6 * torch.randn(LOSS_BATCH, n_rkhs, 1, 1, generator=generator)

    def features():
        return {name: shared + torch.randn(LOSS_BATCH, n_rkhs, side, side, generator=generator)
                for name, side in (("r1", 1), ("r5", 5), ("r7", 7))}

    f1, f2 = features(), features()
    results = []
    for tclip in (20.0, 10.0):
        loss = costs_module.LossMultiNCE(tclip=tclip)
        torch.manual_seed(LOSS_SEED)
        with torch.no_grad():
            loss_1t5, loss_1t7, loss_5t5, lgt_reg = loss(f1["r1"], f1["r5"], f1["r7"], f2["r1"], f2["r5"], f2["r7"])
        results.append({"tclip": tclip, "1t5": loss_1t5, "1t7": loss_1t7, "5t5": loss_5t5, "lgt_reg": lgt_reg})
    torch.manual_seed(LOSS_SEED)  # the same draws again: view 1's source locations, then view 2's
    locations = [torch.randint(0, 25, (LOSS_BATCH,)) for _ in range(2)]
    return {"f1": f1, "f2": f2, "seed": LOSS_SEED, "locations": locations, "results": results}


def make_probe_loss_reference(costs_module) -> dict:
    """The official online classifiers' loss (costs.loss_xent) on fixed logits; label -1 is unlabelled."""
    generator = torch.Generator().manual_seed(11)
    logits = 8.0 * torch.randn(8, 10, generator=generator)  # many beyond the clip at 10
    labels = torch.tensor([3, 0, 9, -1, 3, 7, -1, 1])
    return {"logits": logits, "labels": labels, "loss": costs_module.loss_xent(logits, labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official_dir", type=Path, help="folder of the official code (model.py, costs.py, ...)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "official")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with official_shims():
        try:
            model_module, costs_module = import_official(args.official_dir)
        except FileNotFoundError as error:
            raise SystemExit(f"error: {error}") from None
        pixels = {size: fixed_pixels(size) for size in sorted({case["encoder_size"] for case in CASES.values()})}
        reference = {"pixels": pixels, "pixels_to_inputs": PIXELS_TO_INPUTS, "cases": {},
                     "loss": make_loss_reference(costs_module), "probe_loss": make_probe_loss_reference(costs_module)}
        for seed, (name, hyperparams) in enumerate(CASES.items()):
            checkpoint, reference["cases"][name] = make_case(model_module, seed, pixels[hyperparams["encoder_size"]],
                                                             name == WITH_PROBES, **hyperparams)
            torch.save(checkpoint, args.out / f"{name}.pth", _use_new_zipfile_serialization=name != LEGACY_FORMAT)
    torch.save(reference, args.out / "reference.pt")
    for path in sorted(args.out.iterdir()):
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
