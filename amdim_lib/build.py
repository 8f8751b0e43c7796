"""What every run is built from: the device and its precision, the encoder, the data, the budget.

These factories sit below the training loop so that evaluation, the supervised baseline, benchmarks
and notebooks build the same pieces the loop does without importing the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import time
from pathlib import Path

import torch

from .batched_views import BatchedViews
from .checkpoints import load_checkpoint, unusable_checkpoint
from .datasets import build_dataset, num_classes, self_supervised_split
from .encoder import Encoder
from .presets import Config
from .views import Transformed, ViewPair, eval_transform, make_two_views, resolve_policy


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


def cpu_bf16_units() -> list[str]:
    """This CPU's bf16 hardware ("AMX", "AVX-512 BF16"); empty where it has none or PyTorch cannot say."""
    try:
        return [name for name, present in (("AMX", torch.cpu._is_amx_tile_supported),
                                           ("AVX-512 BF16", torch.cpu._is_avx512_bf16_supported)) if present()]
    except (AttributeError, RuntimeError):  # (private probes: absent on some builds and platforms)
        return []


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 convolutions in hardware (AVX-512 BF16 or AMX) and oneDNN may
    use it (ONEDNN_MAX_CPU_ISA can forbid it). Elsewhere bf16 is emulated and many times slower."""
    try:
        return bool(cpu_bf16_units() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # (a private probe: absent on some builds and platforms)
        return False


BF16_MIN_SPEEDUP = 1.25  # how much faster than float32 a bf16 convolution must run for amp=auto to pick it


@functools.cache
def cpu_bf16_speedup() -> float:
    """float32's time over bf16's for one convolution's forward and backward on this CPU, measured once
    per process (a 3x3 on 16 images of 128x16x16, best of 3, about 0.3 s); 0.0 where bf16 is not native.

    Native bf16 is not always faster: on an Intel Xeon with AMX this probe ran 2.6-4.1x float32's speed
    (and whole steps on an AMD EPYC with AVX-512 BF16 1.8-1.9x), but on the same Xeon with oneDNN held
    below AMX 0.6x (whole paper-size steps 1.45x slower; benchmarks/LOG.md): the CPU's flags cannot choose."""
    if not cpu_has_native_bf16():
        return 0.0
    with torch.inference_mode(False), torch.enable_grad():  # (the first caller may be evaluating)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(16, 128, 16, 16, generator=generator).to(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3, generator=generator).div(34).to(memory_format=torch.channels_last)
        x.requires_grad_(), w.requires_grad_()

        def seconds(bf16: bool) -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.nn.functional.conv2d(x, w, padding=1)
            y.backward(torch.ones_like(y))
            return time.perf_counter() - start

        best = {bf16: min(seconds(bf16) for _ in range(4)) for bf16 in (False, True)}  # the first: a warm-up
    return best[False] / best[True]


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full precision. `auto` is bf16 where the
    hardware runs it fast (CUDA with bf16, else fp16; CPUs whose bf16 convolution was measured at least
    BF16_MIN_SPEEDUP times float32's speed), full precision elsewhere."""
    if amp == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else None
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_freed_memory_kept = False


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next training step instead of returning it.

    By default it maps each block above 32 MiB afresh and unmaps it when freed (a float32 30x30 map of
    the paper-size model at batch 64 is 59 MiB), so every step faults those pages in again: a 1x1
    convolution on such a map ran 3x slower, whole CPU steps 1.01-1.12x (benchmarks/LOG.md). Linux with
    glibc only, and not where the user set malloc's own variables; returns whether it was set."""
    global _freed_memory_kept
    chosen = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) or \
        "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    if _freed_memory_kept or chosen or not sys.platform.startswith("linux"):
        return _freed_memory_kept
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # (the process's own C library)
    limit = ctypes.c_int(2**31 - 1)
    _freed_memory_kept = bool(mallopt and mallopt(_M_MMAP_THRESHOLD, limit) and mallopt(_M_TRIM_THRESHOLD, limit))
    return _freed_memory_kept


def execution_summary(config: Config, device: torch.device, dtype: torch.dtype | None) -> str:
    """One line for a run's log: how this machine runs the configuration, and why where it chose."""
    why = ""
    if device.type == "cpu" and (config.amp == "auto" or dtype == torch.bfloat16):
        speedup = cpu_bf16_speedup()
        if not speedup:
            why = (" (emulated on this CPU: many times slower than float32; amp=auto chooses for you)" if dtype
                   else " (amp=auto: no native bf16 on this CPU)")
        else:
            measured = f"a bf16 convolution ran {speedup:.1f}x float32's speed on this CPU"
            if config.amp == "auto":
                why = f" (amp=auto: {measured})"
            elif speedup < BF16_MIN_SPEEDUP:
                why = f" ({measured}: amp=auto would choose float32)"
    precision = (f"{str(dtype).removeprefix('torch.')} autocast" if dtype else "float32") + why
    compiled = f"compiled ({config.compile_mode})" if config.compile else "eager"
    kept = ", freed memory kept for reuse (glibc malloc)" if device.type == "cpu" and _freed_memory_kept else ""
    return (f"running on {device}: {precision}, {'channels-last' if config.channels_last else 'NCHW'} layout, "
            f"{compiled} encoder, {torch.get_num_threads()} threads{kept}")


def encoder_from_checkpoint(path: str | Path) -> tuple[Encoder, Config]:
    """The trained encoder (in eval mode, on the CPU) and the configuration it was trained with; a
    checkpoint whose contents do not fit is one ValueError naming it (for every caller, not only the CLI)."""
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"])
        encoder = build_encoder(config)
        encoder.load_state_dict(state["encoder"])
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as error:
        raise unusable_checkpoint(path, error) from None
    return encoder.eval(), config


def build_encoder(config: Config) -> Encoder:
    encoder = Encoder(config.image_size, config.ndf, config.n_rkhs, config.n_depth, config.use_bn)
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
