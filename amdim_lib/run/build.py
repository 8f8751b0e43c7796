"""What every run is built from: the device and its precision, the encoder, the data, the budget.

These factories sit below the training loop so that evaluation, the supervised baseline, benchmarks
and notebooks build the same pieces the loop does without importing the loop.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import warnings
from pathlib import Path

import torch
from torch import nn

from ..data.batched_views import BatchedViews
from .checkpoints import check_weights, load_checkpoint, unusable_checkpoint
from ..data.datasets import build_dataset, num_classes, self_supervised_split
from ..core.encoder import Encoder, Features, views_in_batch
from ..core.mixture import MixtureHead, mixture_amdim_loss
from ..core.objectives import GlobalBatch, amdim_loss
from .presets import Config
from .probes import Probes
from .speed import autocast_dtype, use_matmul_convolutions
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
        weights = dict(state["encoder"])
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise unusable_checkpoint(path, error) from None
    return encoder_holding(config, lambda shapes: weights, path), config


def encoder_holding(config: Config, weights_for, path: str | Path) -> Encoder:
    """The configuration's encoder (eval mode) loaded with `weights_for(shapes)`, `shapes` being the encoder built
    on the meta device: the weights are checked against it before any storage is allocated, so a file that claims
    a huge encoder is refused by its shapes, and weights that do not fit are one ValueError naming `path`."""
    try:
        with torch.device("meta"):  # shapes only: a crafted configuration allocates nothing
            shapes = build_encoder(config)
    except (RuntimeError, ValueError) as error:
        raise unusable_checkpoint(path, error) from None
    weights = weights_for(shapes)
    check_weights(path, weights, shapes.state_dict())
    encoder = build_encoder(config)
    try:
        encoder.load_state_dict(weights)
    except (TypeError, RuntimeError) as error:
        raise unusable_checkpoint(path, error) from None
    return encoder.eval()


def build_encoder(config: Config) -> Encoder:
    """The configuration's encoder, with this machine's speed rules applied from outside (run.speed)."""
    encoder = use_matmul_convolutions(Encoder(config.image_size, config.ndf, config.n_rkhs, config.n_depth,
                                              config.use_bn), config.matmul_convolutions)
    # Weights in NHWC order too, so that no convolution converts layouts back and forth.
    return encoder.to(memory_format=torch.channels_last) if config.channels_last else encoder


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and schedulers set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """`requested` data loader workers, at most the usable CPUs: more only compete for them, and
    thousands of forked workers exhaust the machine's memory. The views do not depend on it."""
    cpus = usable_cpus()
    if requested > cpus:
        warnings.warn(f"num_workers={requested} lowered to {cpus}, the CPUs this process may use", stacklevel=3)
    return min(requested, cpus)


def leave_stopping_to_the_trainer(worker_id: int) -> None:
    """In a data-loader worker: ignore Ctrl-C, and leave quietly (exit status 0) on SIGTERM. A terminal or a
    scheduler signals the whole process group; the training process then stops after its step and writes its
    checkpoint, where a worker killed by the signal would end the run with a traceback ("killed by signal")."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


def make_loader(dataset, config: Config, device: torch.device, batch_size: int, sampler=None):
    """A DataLoader with the run's workers (kept alive across epochs) and pinned memory on CUDA."""
    workers = loader_workers(config.num_workers)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=sampler is not None,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=device.type == "cuda", worker_init_fn=leave_stopping_to_the_trainer,
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


# ----------------------------------------------------------------------------- the model, its objective and its optimiser

class AMDIM(nn.Module):
    """The encoder, its online probes and, with `mixture_k`, the mixture head as one module (what DDP wraps).

    `encoder` may be a torch.compile'd wrapper; checkpoints store the plain module's weights.
    """

    def __init__(self, encoder: Encoder, probes: Probes, channels_last: bool = False, mixture: nn.Module | None = None,
                 bn_per_view: bool = True):
        super().__init__()
        self.encoder, self.probes, self.channels_last, self.mixture = encoder, probes, channels_last, mixture
        self.bn_per_view = bn_per_view

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        """Features of both views, probe logits on both views' r1 (view 1's rows, then view 2's) and,
        with a mixture head, the k components of each view's r1 (else None).

        The views share one forward pass; with `bn_per_view` every encoder BN normalises each view with
        its own statistics (as the official code's two separate passes do), else both views together.
        The head runs here, inside the forward that DDP wraps, so that its gradients are synchronised
        like the encoder's."""
        both, f1, f2 = self.encode(x1, x2)
        components = None if self.mixture is None else (self.mixture(f1.r1), self.mixture(f2.r1))
        return f1, f2, self.probes(both.r1.detach().flatten(1).float()), components

    def encode(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[Features, Features, Features]:
        """Features of both views from one encoder pass: (both stacked, view 1's, view 2's)."""
        x = torch.cat([x1, x2])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with views_in_batch(self.encoder, 2 if self.bn_per_view else 1):
            both = self.encoder(x)
        # split (not slicing): its backward concatenates the views' gradients in the features' layout.
        halves = [t.split(len(x1)) for t in both]
        return both, Features(*(h[0] for h in halves)), Features(*(h[1] for h in halves))


def lr_factor(step: int, warmup_steps: int, milestone_steps: list[int], gamma: float) -> float:
    """Linear warm-up over the first updates, then x gamma at each milestone (MultiStepLR by epoch)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return warm * gamma ** sum(step >= m for m in milestone_steps)


def build_model(config: Config, encoder: Encoder, probes: Probes, mixture: nn.Module | None = None) -> AMDIM:
    """Encoder (compiled when `config.compile`), probes and mixture head as the module that training steps call."""
    if config.compile and os.environ.get("ATEN_CPU_CAPABILITY") and next(encoder.parameters()).device.type == "cpu":
        # Measured with PyTorch 2.14: inductor's CPU code under a capped ATen ISA computes wrong losses.
        raise ValueError(f"compile=True with ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']} computes a "
                         "wrong step on the CPU; unset ATEN_CPU_CAPABILITY (ONEDNN_MAX_CPU_ISA is safe) or set compile=False")
    encoder = torch.compile(encoder, mode=config.compile_mode) if config.compile else encoder
    return AMDIM(encoder, probes, config.channels_last, mixture, bn_per_view=config.bn_per_view)


def build_mixture(config: Config) -> nn.Module | None:
    """The mixture head m_k when `config.mixture_k` > 0 (amdim_lib.core.mixture), else None."""
    return MixtureHead(config.n_rkhs, config.mixture_k, config.mixture_hidden or None) if config.mixture_k else None


def _gradients_in_parameter_layout(optimizer, args, kwargs) -> None:
    """Before each step, give any gradient whose memory order differs from its parameter's (an NCHW
    gradient on a channels-last weight) the parameter's layout: fused Adam pairs the two tensors'
    elements in memory order, so such a gradient would silently update the wrong weights. Autograd
    keeps the orders alike; a gradient assigned by hand need not."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and not _same_memory_order(p.grad, p):
                p.grad = torch.empty_like(p).copy_(p.grad)


def _same_memory_order(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Strides of size-1 dimensions do not matter (autograd's own layout check ignores them too).
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


def build_optimisation(config: Config, encoder, probes, device, steps_per_epoch: int, extra: tuple = ()):
    """Adam over encoder, probes and the `extra` modules, the warm-up + step-decay schedule, and the
    fp16 grad scaler."""
    params = [p for module in (encoder, probes, *extra) for p in module.parameters()]
    # Fused: one pass over each tensor instead of a dozen elementwise ops (on the CPU and CUDA since
    # PyTorch 2.4; other devices keep the default kernels).
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                 weight_decay=config.weight_decay, fused=device.type in ("cpu", "cuda") or None)
    optimizer.register_step_pre_hook(_gradients_in_parameter_layout)
    milestone_steps = [m * steps_per_epoch for m in config.milestones]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, milestone_steps, config.gamma))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(config.amp, device) == torch.float16)
    return optimizer, scheduler, scaler


def objective(config: Config, f1: Features, f2: Features, components, generator: torch.Generator | None,
              batch: GlobalBatch = GlobalBatch()) -> dict[str, torch.Tensor]:
    """The configuration's loss between two views' features: AMDIM's multiscale loss, or with a mixture
    head (`components` of both views) the 1t7 task through its k components (amdim_lib.core.mixture)."""
    if components is None:
        return amdim_loss(f1, f2, config.tclip, config.reg_weight, config.tasks, generator=generator, batch=batch)
    return mixture_amdim_loss(f1, f2, components, config.mixture_tau, config.mixture_alpha, config.tclip,
                              config.reg_weight, generator, config.tasks, batch=batch)
