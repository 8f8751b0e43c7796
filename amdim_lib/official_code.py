"""The official AMDIM code run beside this library, from a local copy the user gives (never shipped).

The official code (github.com/Philip-Bachman/amdim-public, 2019) targets PyTorch 1.x on CUDA with
NVIDIA apex. It runs unmodified on current PyTorch under these shims, active only inside
`official_shims()`:
- `apex` is an empty stand-in module (mixed precision stays off, so nothing of it is used);
- on a CPU, `Tensor.cuda()` returns the tensor itself (the loss moves its mask with `.cuda()`) and
  `torch.cuda.device_count()` is at least 1 (the loss replicates its targets once per GPU);
- `torch.masked_select` and `Tensor.masked_fill_` take the uint8 masks the code builds as bool
  (PyTorch no longer accepts uint8 masks).

Used by `bench --compare-official` (the official training step timed against ours) and by
`benchmarks/official_reference.py` (frozen reference outputs for the tests).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import torch

from .run.presets import Config


def _bool_masks(function):
    return lambda x, mask, *args, **kwargs: function(x, mask.bool() if mask.dtype == torch.uint8 else mask,
                                                     *args, **kwargs)


@contextlib.contextmanager
def official_shims(cpu: bool = True):
    """Let the 2019 official code run with current PyTorch (see the module docstring)."""
    apex = types.ModuleType("apex")
    apex.fp16_utils = types.ModuleType("apex.fp16_utils")
    apex.fp16_utils.FP16_Optimizer = type("FP16_Optimizer", (), {})
    saved = {"cuda": torch.Tensor.cuda, "masked_fill_": torch.Tensor.masked_fill_,
             "device_count": torch.cuda.device_count, "masked_select": torch.masked_select}
    sys.modules.update({"apex": apex, "apex.fp16_utils": apex.fp16_utils})
    if cpu:
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.cuda.device_count = lambda: max(1, saved["device_count"]())
    torch.Tensor.masked_fill_ = _bool_masks(saved["masked_fill_"])
    torch.masked_select = _bool_masks(saved["masked_select"])
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.masked_fill_ = saved["cuda"], saved["masked_fill_"]
        torch.cuda.device_count, torch.masked_select = saved["device_count"], saved["masked_select"]
        for name in ("apex", "apex.fp16_utils"):
            sys.modules.pop(name, None)


def import_official(official_dir: Path):
    """The official `model` and `costs` modules, imported from `official_dir` (call inside the shims)."""
    official_dir = Path(official_dir).resolve()
    if not (official_dir / "model.py").is_file() or not (official_dir / "costs.py").is_file():
        raise FileNotFoundError(f"{official_dir} has no model.py and costs.py: give the folder of a copy of the "
                                "official code (git clone https://github.com/Philip-Bachman/amdim-public)")
    # Its modules have common names (model, costs, utils): import them afresh from this folder, and
    # leave no such name behind for other code.
    names = ("model", "costs", "utils", "mixed_precision")
    for name in names:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(official_dir))
    try:
        return importlib.import_module("model"), importlib.import_module("costs")
    finally:
        sys.path.remove(str(official_dir))
        for name in names:
            sys.modules.pop(name, None)


class OfficialStep:
    """One training update of the official code at a configuration's sizes, as its
    `task_self_supervised._train` makes it: both views encoded in separate calls, the three NCE
    terms plus the score penalty, both online classifiers, Adam (betas 0.8/0.999, weight decay 1e-5,
    the official settings). Call inside `official_shims()`."""

    def __init__(self, model_module, costs_module, config: Config, device: torch.device, n_classes: int = 10):
        self.costs, self.device = costs_module, device
        self.model = model_module.Model(ndf=config.ndf, n_classes=n_classes, n_rkhs=config.n_rkhs,
                                        tclip=config.tclip, n_depth=config.n_depth,
                                        encoder_size=config.image_size, use_bn=config.use_bn).to(device)
        self.model.train()
        modules = [*self.model.info_modules, *self.model.class_modules]
        self.optimizer = torch.optim.Adam([{"params": m.parameters(), "lr": config.lr} for m in modules],
                                          betas=(0.8, 0.999), weight_decay=1e-5, eps=1e-8)

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor) -> float:
        x1, x2, labels = x1.to(self.device), x2.to(self.device), torch.cat([y, y]).to(self.device)
        out = self.model(x1=x1, x2=x2, class_only=False)
        mlp, lin = out["class"]
        loss = (out["g2l_1t5"] + out["g2l_1t7"] + out["g2l_5t5"] + out["lgt_reg"]
                + self.costs.loss_xent(mlp, labels) + self.costs.loss_xent(lin, labels))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
