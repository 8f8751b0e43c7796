"""Encoders from checkpoints: this project's run checkpoints and the official AMDIM code's files.

`load_encoder(path)` returns (encoder in eval mode, Config) for either kind; the kind is told from
the file's keys.

The official format is what the official code's Checkpointer writes (github.com/Philip-Bachman/
amdim-public, checkpoint.py): a dict with
    'model':       Model.state_dict(): the encoder under 'encoder.module.' (it sits inside
                   nn.DataParallel), its online classifiers under 'evaluator.', and the loss's constant
                   5x5 masks under 'g2l_loss.'; only the encoder's weights are read;
    'hyperparams': the Model's arguments; read here: 'encoder_size' (image size 32, 64 or 128), 'ndf',
                   'n_rkhs', 'n_depth', 'use_bn' (False when absent: the official loader itself always
                   rebuilds with use_bn off) and 'tclip' (20 when absent); 'n_classes' is not needed;
    'cursor':      epochs and steps done (not read).

The released ImageNet models (links in the official README) are in this format, encoders at 128 px
with n_depth 10, trained by the official code:
    https://amdimmodels.blob.core.windows.net/amdim/amdim_ndf256_rkhs2048_rd10.pth   (ndf 256, n_rkhs 2048;
        "AMDIM-Medium", 67%+ linear accuracy on ImageNet)
    https://amdimmodels.blob.core.windows.net/amdim/amdim_ndf320_rkhs2560_rd10.pth   (ndf 320, n_rkhs 2560;
        "AMDIM-Large", 68%+)
They expect the official ImageNet test inputs: resized to 146 px (bicubic), centre-cropped to 128,
normalised with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

Official module names map onto this Encoder one to one: the official `layer_list` is our `to_r7`
(up to and including the BN on the 7x7 features), then `to_r5`, then `to_r1`; its residual blocks
hold their units in a `layer_list` where ours are Sequentials; `MaybeBatchNorm2d` wraps its BN as
`.bn`; `rkhs_block_5`/`rkhs_block_7` are our `head5`/`head7` (their `bn_hid` is our `bn1`). With
use_bn off, the official modules still carry the unused BNs' weights; those are skipped.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from .run.build import build_encoder, encoder_from_checkpoint, encoder_holding
from .run.checkpoints import check_archive, check_weights, load_failure
from .run.checkpoints import FORMAT
from .core.encoder import Encoder
from .run.presets import Config
from .data.datasets import shorten

_ENCODER_PREFIX = re.compile(r"^encoder\.(module\.)?")  # (also accepted without nn.DataParallel's 'module.')
_HYPERPARAMS = ("encoder_size", "ndf", "n_rkhs", "n_depth")
_EXPECTED = (f"an AMDIM workbook checkpoint (a dict with 'format': {FORMAT!r}, written by training) or an official "
             "AMDIM checkpoint (a dict with 'model', holding 'encoder.module.*' weights, and 'hyperparams')")


def load_encoder(path: str | Path) -> tuple[Encoder, Config]:
    """The encoder saved in `path` (in eval mode, on the CPU) and its configuration.

    `path` is a run checkpoint of this project (see `build.encoder_from_checkpoint`) or an official
    AMDIM checkpoint (see this module's docstring; the Config then holds the encoder's sizes and
    tclip, every other setting at its default). Files are read with torch.load(weights_only=True).
    """
    path = Path(path)
    state = _read(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        del state
        return encoder_from_checkpoint(path)
    if is_official_checkpoint(state):
        return official_encoder(state, path)
    found = f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict) else type(state).__name__
    raise ValueError(f"{path} is not a checkpoint this project can load: expected {_EXPECTED}; found {found}")


def _read(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    check_archive(path)
    try:
        # Memory-mapped where the format allows (zip files), so that telling the kind reads little.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:
        raise ValueError(f"{path} could not be read as a checkpoint (truncated, foreign or unsafe file; only tensors "
                         f"and plain containers are loaded): {load_failure(error)}. Expected {_EXPECTED}") from None


def is_official_checkpoint(state) -> bool:
    """Whether a loaded file has the official code's checkpoint layout (an encoder under 'model')."""
    return (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("hyperparams"), dict)
            and any(isinstance(k, str) and _ENCODER_PREFIX.match(k) for k in state["model"]))


def official_config(hyperparams: dict, path: str | Path = "the checkpoint") -> Config:
    """This project's Config for an official model's 'hyperparams' (encoder sizes and tclip)."""
    missing = [k for k in _HYPERPARAMS if k not in hyperparams]
    if missing:
        raise ValueError(f"{path}: the official 'hyperparams' lack {missing} (found {sorted(hyperparams)}); "
                         f"an encoder needs {list(_HYPERPARAMS)}")
    tclip = hyperparams.get("tclip", 20.0)
    try:
        return Config(dataset=trained_on(hyperparams), image_size=int(hyperparams["encoder_size"]), ndf=int(hyperparams["ndf"]),
                      n_rkhs=int(hyperparams["n_rkhs"]), n_depth=int(hyperparams["n_depth"]),
                      use_bn=bool(hyperparams.get("use_bn", False)), tclip=None if tclip is None else float(tclip))
    except (ValueError, TypeError) as error:
        expected = " (encoder_size, ndf, n_rkhs and n_depth must be whole numbers)" if isinstance(error, TypeError) else ""
        raise ValueError(f"{path}: its official 'hyperparams' {shorten(repr(hyperparams))} make no valid "
                         f"encoder{expected}: {shorten(str(error))}") from None


# The official code's data sets, told apart by their image size and number of classes (the hyperparams
# name neither): what an official encoder was trained on, and so the input statistics it expects. The
# image size alone decides where the classes match none (the statistics are the same within a size).
_TRAINED_ON = {(32, 10): "cifar10", (32, 100): "cifar100", (64, 10): "stl10", (128, 1000): "imagenet",
               (128, 205): "places205"}
_BY_SIZE = {32: "cifar10", 64: "stl10", 128: "imagenet"}


def trained_on(hyperparams: dict) -> str:
    """The data set an official model was trained on, from its image size and number of classes."""
    size = int(hyperparams["encoder_size"])
    return _TRAINED_ON.get((size, int(hyperparams.get("n_classes", 0))), _BY_SIZE.get(size, "imagenet"))


def official_encoder(state: dict, path: str | Path = "the checkpoint") -> tuple[Encoder, Config]:
    """(encoder in eval mode, Config) from a loaded official checkpoint."""
    config = official_config(state["hyperparams"], path)
    return encoder_holding(config, lambda shapes: encoder_weights(state["model"], shapes, path), path), config


def encoder_weights(model_state: dict, encoder: Encoder, path: str | Path = "the checkpoint") -> dict:
    """The official Model state dict's encoder weights under this Encoder's names."""
    ours = encoder.state_dict()
    weights, unused = {}, []
    for key, tensor in model_state.items():
        if not (isinstance(key, str) and _ENCODER_PREFIX.match(key)):
            continue  # the online classifiers, the loss's constant masks (and anything not named by a string)
        name = our_name(_ENCODER_PREFIX.sub("", key), len(encoder.to_r7))
        if name in ours:
            weights[name] = tensor
        elif not encoder.use_bn and re.search(r"(^|\.)bn\.", key):
            continue  # a BN that the official code builds but skips with use_bn off
        else:
            unused.append(key)
    # (BN step counters are optional: files from before PyTorch 0.4.1 have none.)
    missing = [k for k in ours if k not in weights and not k.endswith("num_batches_tracked")]
    if unused or missing:
        raise ValueError(f"{path}: the official weights do not match an encoder with use_bn={encoder.use_bn}, "
                         f"n_depth={encoder.n_depth}: weights without a place here {unused[:5]}, "
                         f"weights this encoder needs that the file lacks {missing[:5]}")
    return weights


def our_name(official: str, trunk_r7_length: int) -> str:
    """This Encoder's name for an official encoder weight name (without 'encoder.module.').

    `trunk_r7_length` is len(encoder.to_r7): the official layer_list's first layers are to_r7's,
    the next is to_r5 and the rest are to_r1's.
    """
    match = re.match(r"layer_list\.(\d+)\.", official)
    if match:
        index = int(match.group(1))
        place = (f"to_r7.{index}" if index < trunk_r7_length else "to_r5" if index == trunk_r7_length
                 else f"to_r1.{index - trunk_r7_length - 1}")
        official = f"{place}.{official[match.end():]}"
    official = re.sub(r"^rkhs_block_([57])\.", r"head\1.", official)
    official = re.sub(r"(^|\.)layer_list\.(\d+)\.", r"\1\2.", official)   # units inside a residual block
    official = official.replace("bn_hid.", "bn1.")
    return re.sub(r"(^|\.)bn\.", r"\1", official)                          # MaybeBatchNorm2d's wrapped BN
