"""What every run is built from: the device and its precision, the encoder, the data, the budget.

These factories sit below the training loop so that evaluation, the supervised baseline, benchmarks
and notebooks build the same pieces the loop does without importing the loop.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from ..data.batched_views import BatchedViews
from .checkpoints import check_weights, load_checkpoint, unusable_checkpoint
from ..data.datasets import build_dataset, num_classes, self_supervised_split
from ..core.encoder import Encoder
from .presets import Config
from .speed import use_matmul_convolutions
from ..core.views import Transformed, ViewPair, eval_transform, make_two_views, resolve_policy


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; anything else is taken as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device='auto' or 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {name!r} requested but MPS is not available; use device='auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def encoder_from_checkpoint(path: str | Path) -> tuple[Encoder, Config]:
    """The trained encoder (in eval mode, on the CPU) and the configuration it was trained with; a
    checkpoint whose contents do not fit is one ValueError naming it (for every caller, not only the CLI)."""
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"])
        encoder = build_encoder(config)
        weights = dict(state["encoder"])
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as error:
        raise unusable_checkpoint(path, error) from None
    check_weights(path, weights, encoder.state_dict())
    try:
        encoder.load_state_dict(weights)
    except (TypeError, RuntimeError) as error:
        raise unusable_checkpoint(path, error) from None
    return encoder.eval(), config


def build_encoder(config: Config) -> Encoder:
    """The configuration's encoder, with this machine's speed rules applied from outside (run.speed)."""
    encoder = use_matmul_convolutions(Encoder(config.image_size, config.ndf, config.n_rkhs, config.n_depth,
                                              config.use_bn), config.matmul_convolutions)
    # Weights in NHWC order too, so that no convolution converts layouts back and forth.
    return encoder.to(memory_format=torch.channels_last) if config.channels_last else encoder


def make_loader(dataset, config: Config, device: torch.device, batch_size: int, sampler=None):
    """A DataLoader with the run's workers (kept alive across epochs) and pinned memory on CUDA."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=sampler is not None,
                                       num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                                       pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(config.seed))


def build_splits(config: Config, self_supervised: bool = False):
    """The configured data set's (train, test) splits, untransformed.

    self_supervised=True: the training split is the one self-supervised training reads (STL-10:
    train+unlabeled, whose unlabelled items carry label -1); otherwise the labelled one, for probes.
    """
    train_split = self_supervised_split(config.dataset) if self_supervised else "train"
    return tuple(build_dataset(config.dataset, split, config.image_size, config.data_dir, size, config.seed,
                               config.skip_bad_images, config.download)
                 for split, size in ((train_split, config.train_size), ("test", config.test_size)))


def two_views(config: Config):
    """The training views of `config`: per batch on the training device (`batch_views`) or per image
    in the loader, with the data set's normalisation."""
    policy, normalise = resolve_policy(config.policy, config.image_size), config.normalisation_name()
    if config.batch_views:
        return BatchedViews(policy, config.image_size, normalise=normalise, level=config.augment)
    return make_two_views(policy, config.image_size, normalise, level=config.augment)


def eval_transform_for(config: Config):
    """The deterministic transform of `config`'s test images (its view policy, size and normalisation)."""
    policy = resolve_policy(config.policy, config.image_size)
    return eval_transform(policy, config.image_size, config.normalisation_name())


def eval_dataset(dataset, config: Config) -> Transformed:
    """`dataset` read through the test transform of `config`: what the online probes, the frozen-feature
    probes and the test split of every run see."""
    return Transformed(dataset, eval_transform_for(config))


def build_data(config: Config, self_supervised: bool = True):
    """(two-view training set, test set with the test transform, number of classes).

    self_supervised=False keeps the same views but reads the labelled training split (STL-10:
    `train`, not `train+unlabeled`), as the supervised baseline needs.
    """
    train_base, test_base = build_splits(config, self_supervised=self_supervised)
    pairs = ViewPair(train_base, two_views(config), seed=config.seed)
    if len(pairs) < config.batch_size:
        split = "training" if self_supervised else "labelled training"
        raise ValueError(f"the {split} split has {len(pairs)} images, fewer than one batch of {config.batch_size}; "
                         "lower batch_size or add data")
    return pairs, eval_dataset(test_base, config), num_classes(train_base)


def steps_per_epoch(config: Config, train_set=None) -> int:
    """Updates per epoch: the whole batches of `config.batch_size` in `train_set`, by default the
    training split of the self-supervised run of `config` (then only the data set's index is built)."""
    if train_set is None:
        train_set, _ = build_splits(config, self_supervised=True)
    return len(train_set) // config.batch_size


def budget_config(config: Config, steps: int | None) -> tuple[Config, int]:
    """(configuration, updates) of a run with a budget of `steps` updates (None: the configuration's
    own schedule). A budgeted run: enough epochs, constant learning rate after a warm-up of a tenth of
    the budget (at most the configured warm-up), no step decay; it stops after `steps` updates."""
    per_epoch = steps_per_epoch(config)
    if per_epoch < 1:
        raise ValueError(f"the training split is smaller than one batch of {config.batch_size}")
    if steps is None:
        return config, per_epoch * config.epochs
    if steps < 1:
        raise ValueError(f"steps={steps}; a budget of at least one update")
    warmup = min(config.warmup_steps, max(1, steps // 10)) if config.warmup_steps else 0
    return config.replace(epochs=math.ceil(steps / per_epoch), milestones=(), warmup_steps=warmup), int(steps)


def autocast(device: torch.device, dtype):
    """torch.autocast for `dtype` on `device`, or a no-op context for full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
