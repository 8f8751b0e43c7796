"""Benchmarks: training-step throughput and peak memory, and the data pipeline on its own.

Throughput counts images as the encoder sees them: both views of every item (2 x batch per step).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .presets import Config
from .build import autocast_dtype, build_data, select_device
from .train import Runtime, build_state, epoch_loader, train_step


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul: the practical peak that the training step is compared with.
    (n: 2048 on a CPU; 8192 on a GPU, where smaller products do not fill the device.)"""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    # cuDNN runs float32 convolutions on TF32 tensor cores by default: compare with a TF32 matmul then.
    tf32 = device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = previous or tf32
    try:
        for _ in range(2):
            a @ b
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _training_setup(config: Config):
    device = select_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    state = build_state(config, 10, device, steps_per_epoch=1)
    runtime = Runtime(device, autocast_dtype(config.amp, device))

    def step(x1, x2, y):
        train_step(state, x1, x2, y, config, runtime)
    return device, step


def _synthetic_batch(config: Config):
    """Random inputs of the configuration's shape: (view 1, view 2, labels)."""
    shape = (config.batch_size, 3, config.image_size, config.image_size)
    return torch.randn(shape), torch.randn(shape), torch.randint(0, 10, (config.batch_size,))


def over_epochs(first: float, later: float, epochs: int) -> float:
    """A per-step figure averaged over a run of `epochs`: one first epoch, the rest like later ones."""
    return (first + (epochs - 1) * later) / epochs


def _seconds(device: torch.device, work) -> float:
    """Wall seconds of work(), the device's queued work included at both ends."""
    _sync(device)
    start = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - start


def _timed(device: torch.device, step, batches, warmup: int) -> float:
    """Seconds per call of step(*batch) over `batches`, after `warmup` untimed calls."""
    batches = list(batches)
    for batch in batches[:warmup]:
        step(*batch)
    timed = batches[warmup:]
    return _seconds(device, lambda: [step(*batch) for batch in timed]) / len(timed)


def bench_training(config: Config, steps: int = 10, warmup: int = 3, flops: bool = True) -> dict:
    """Time `steps` full training steps (encoder, AMDIM loss, probes, Adam) on synthetic inputs.

    With `flops`, also count the FLOPs of one step (PyTorch's FlopCounterMode: matmuls and
    convolutions, forward and backward) and compare the achieved rate with a matmul measured now.
    """
    device, step = _training_setup(config)
    batch = _synthetic_batch(config)
    if device.type == "cuda":
        batch = tuple(t.pin_memory() for t in batch)
        torch.cuda.reset_peak_memory_stats(device)
    step_flops = None
    if flops:
        with FlopCounterMode(display=False) as counter:
            step(*batch)
        step_flops = counter.get_total_flops()
    seconds = _timed(device, step, [batch] * (warmup + steps), warmup)
    result = {"device": str(device), "batch_size": config.batch_size, "seconds_per_step": seconds,
              "images_per_s": 2 * config.batch_size / seconds, "peak_memory_mib": _peak_memory_mib(device)}
    if step_flops:
        peak = matmul_peak(device, autocast_dtype(config.amp, device) or torch.float32)
        result.update(gflop_per_step=step_flops / 1e9, gflop_per_image=step_flops / 1e9 / (2 * config.batch_size),
                      achieved_gflops=step_flops / seconds / 1e9, matmul_peak_gflops=peak / 1e9,
                      fraction_of_peak=step_flops / seconds / peak)
    return result


def bench_end_to_end(config: Config, steps: int = 10, warmup: int = 3, epochs: int = 4) -> dict:
    """What training loses to data loading: steps fed by the two-view data pipeline (as `train` reads
    it: same sampler, workers and pinning, batched views computed in the loop) against the same
    model's steps on synthetic inputs.

    The two kinds alternate step by step, `steps` of each per epoch over the same items, so that a
    drifting machine speed (another tenant, clocks) affects both alike; a real step is timed from
    asking the loader for its batch to the end of the update. The first epoch reads (renders,
    decodes) every image for the first time; later ones cost what every later epoch costs (less
    where the images are kept, as with batched views). Returns seconds per step of each kind."""
    device, step = _training_setup(config)
    pairs, _, _ = build_data(config)
    sampler, loader = epoch_loader(pairs, config, device)
    if len(loader) < steps:
        raise ValueError(f"{len(loader)} batches in the training split; the benchmark needs {steps}")
    synthetic = _synthetic_batch(config)
    for _ in range(warmup):
        step(*synthetic)
    times = []  # per epoch: (synthetic, real) seconds per step
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches = iter(loader)
        pairs_of_steps = [(_seconds(device, lambda: step(*synthetic)),
                           _seconds(device, lambda: step(*pairs.views_on(next(batches), device)))) for _ in range(steps)]
        times.append(tuple(sum(kind) / steps for kind in zip(*pairs_of_steps)))
    later = [statistics.median(kind) for kind in zip(*times[1:])]  # (synthetic, real) medians of the later epochs
    return {"num_workers": config.num_workers, "batch_views": config.batch_views, "steps_per_epoch": steps,
            "first_epoch": {"synthetic_seconds_per_step": times[0][0], "seconds_per_step": times[0][1]},
            "later_epochs": {"synthetic_seconds_per_step": later[0], "seconds_per_step": later[1]}}


def bench_data(config: Config, batches: int = 10) -> dict:
    """Throughput of the two-view data pipeline alone (decode/render, augment, collate; with batched
    views, their batch step too, on the configured device), in a first epoch (every image read
    for the first time) and in a second one over the same images."""
    device = select_device(config.device)
    pairs, _, _ = build_data(config)
    sampler, loader = epoch_loader(pairs, config, device)
    batches = min(batches, len(loader))
    rates = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        iterator = iter(loader)
        pairs.views_on(next(iterator), device)  # start-up of workers is not throughput
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches - 1):
            pairs.views_on(next(iterator), device)
        _sync(device)
        rates.append(2 * config.batch_size * (batches - 1) / max(time.perf_counter() - start, 1e-9))
    return {"num_workers": config.num_workers, "batch_views": config.batch_views,
            "images_per_s": rates[0], "later_images_per_s": rates[1]}
