"""Benchmarks: training-step throughput and peak memory, and the data pipeline on its own.

Throughput counts images as the encoder sees them: both views of every item (2 x batch per step).
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .run.presets import Config
from .run.build import autocast, build_data, select_device
from .run.speed import autocast_dtype, cpu_bf16_units, prepare_device
from .core.objectives import amdim_loss
from .official_code import OfficialStep, import_official, official_shims
from .run.probes import probe_loss
from .run.train import Runtime, TrainState, build_state, epoch_loader, train_step


# Environment variables that cap the vector ISA of oneDNN, ATen and MKL (to emulate an older CPU).
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def machine_summary(device: torch.device) -> str:
    """What the figures were measured on: the device, the vector ISA PyTorch's kernels use and the
    limits set on it in the environment (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS
    emulate an older CPU), and the threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, PyTorch {torch.__version__}"
    limits = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    bf16 = " and ".join(cpu_bf16_units()) or "none"  # AMX or not: bf16 speeds differ several-fold
    return (f"{_cpu_name()} CPU, {torch.backends.cpu.get_cpu_capability()} kernels, bf16 hardware: {bf16}"
            f"{' (' + ', '.join(limits) + ')' if limits else ''}, {torch.get_num_threads()} threads, "
            f"PyTorch {torch.__version__}")


def _cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    first_cpu = lines[:lines.index("")] if "" in lines else lines
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_cpu if ":" in line)}
    name = fields.get("model name") or platform.processor() or platform.machine()
    # A virtual machine may show only "AMD EPYC": family and model tell its generations apart.
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix product: the practical peak that the training step is compared with.
    (n: 2048 on a CPU; 8192 on a GPU, where smaller products do not fill the device.) On a CPU, the
    faster of `torch.mm` (MKL, which on some CPUs runs an older ISA's code) and the same product as a
    1x1 convolution (oneDNN, the library that runs the encoder's convolutions)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    products = [lambda: a @ b]
    if device.type == "cpu":
        x = a.view(1, n, n // 32, 32).contiguous(memory_format=torch.channels_last)
        w = b.view(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
        products.append(lambda: torch.nn.functional.conv2d(x, w))
    # cuDNN runs float32 convolutions on TF32 tensor cores by default: compare with a TF32 matmul then.
    tf32 = device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = previous or tf32

    def rate(product) -> float:
        for _ in range(2):  # warm-up: first calls choose kernels and allocate
            product()
        return 2 * n**3 * repeats / _seconds(device, lambda: [product() for _ in range(repeats)])
    try:
        with torch.no_grad():  # the best of three rounds: a shared machine's noise only ever slows a round
            return max(rate(product) for product in products for _ in range(3))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _training_state(config: Config) -> tuple[TrainState, Runtime]:
    device = select_device(config.device)
    prepare_device(device)
    torch.manual_seed(config.seed)
    return build_state(config, 10, device, steps_per_epoch=1), Runtime(device, autocast_dtype(config.amp, device))


def _training_setup(config: Config):
    state, runtime = _training_state(config)

    def step(x1, x2, y):
        train_step(state, x1, x2, y, config, runtime)
    return runtime.device, step


def _synthetic_batch(config: Config):
    """Random inputs of the configuration's shape: (view 1, view 2, labels)."""
    shape = (config.batch_size, 3, config.image_size, config.image_size)
    return torch.randn(shape), torch.randn(shape), torch.randint(0, 10, (config.batch_size,))


def over_epochs(first: float, later: float, epochs: int) -> float:
    """A per-step figure averaged over a run of `epochs`: one first epoch, the rest like later ones."""
    return (first + (epochs - 1) * later) / epochs


def _result_and_seconds(device: torch.device, work):
    """(work(), its wall seconds), the device's queued work included at both ends."""
    _sync(device)
    start = time.perf_counter()
    out = work()
    _sync(device)
    return out, time.perf_counter() - start


def _seconds(device: torch.device, work) -> float:
    """Wall seconds of work(), the device's queued work included at both ends."""
    return _result_and_seconds(device, work)[1]


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


def bench_speed_rules(config: Config, steps: int = 3, rounds: int = 5, warmup: int = 2) -> dict:
    """The step with run/speed.py's convolution rules against the plain nn.Conv2d step, alternated round by
    round in this process (so that a drifting machine speed affects both alike). Returns the median
    seconds per step of each and their ratio (plain / with rules: above 1, the rules pay here)."""
    batch = _synthetic_batch(config)
    steps_of = {rules: _training_setup(config.replace(matmul_convolutions=rules)) for rules in (True, False)}
    device = steps_of[True][0]
    times = {True: [], False: []}
    for rules, (_, step) in steps_of.items():
        for _ in range(warmup):
            step(*batch)
    for _ in range(rounds):
        for rules, (_, step) in steps_of.items():
            times[rules].append(_seconds(device, lambda: [step(*batch) for _ in range(steps)]) / steps)
    with_rules, plain = (statistics.median(times[rules]) for rules in (True, False))
    return {"seconds_per_step_with_rules": with_rules, "seconds_per_step_plain": plain, "ratio": plain / with_rules,
            "rounds": rounds, "steps_per_round": steps}


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
        for _ in iterator:  # the rest of the epoch, untimed: the next one then reads only images seen before
            pass
    return {"num_workers": config.num_workers, "batch_views": config.batch_views,
            "images_per_s": rates[0], "later_images_per_s": rates[1]}


# ----------------------------------------------------------------------------- where a step goes

PHASES = ("views", "encoder forward", "NCE forward", "probes forward", "NCE backward", "probes backward",
          "encoder backward", "optimiser")


def _phased_step(state: TrainState, x1, x2, y, config: Config, runtime: Runtime, clock) -> dict:
    """One update of `train_step` cut into phases, each timed by `clock(phase, work)`; the backward
    pass is split at the features (the NCE terms' gradients first, then the encoder's). Returns the
    AMDIM losses, which equal the plain step's."""
    model, device = state.model, runtime.device
    x1, x2, y = x1.to(device), x2.to(device), y.to(device)
    with autocast(device, runtime.dtype):
        both, f1, f2 = clock("encoder forward", lambda: model.encode(x1, x2))
        logits = clock("probes forward", lambda: model.probes(both.r1.detach().flatten(1).float()))
    losses = clock("NCE forward", lambda: amdim_loss(f1, f2, config.tclip, config.reg_weight, config.tasks,
                                                     generator=state.nce_rng))
    probes_total = clock("probes forward", lambda: sum(probe_loss(out, torch.cat([y, y])) for out in logits.values()))
    state.optimizer.zero_grad(set_to_none=True)
    features = list(both)
    grads = clock("NCE backward", lambda: torch.autograd.grad(losses["loss"], features, allow_unused=True))
    clock("probes backward", lambda: probes_total.backward())
    used = [(f, g) for f, g in zip(features, grads) if g is not None]
    clock("encoder backward", lambda: torch.autograd.backward([f for f, _ in used], [g for _, g in used]))

    def update():
        params = [p for group in state.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, float("inf"))
        state.optimizer.step()
        state.scheduler.step()
    clock("optimiser", update)
    return losses


def _views_seconds(config: Config, device: torch.device, batches: int) -> float:
    """Seconds to get one batch of two views from the training pipeline once its images have been read."""
    pairs, _, _ = build_data(config.replace(train_size=config.batch_size * batches))
    sampler, loader = epoch_loader(pairs, config, device)
    for _ in loader:  # a first epoch reads every image
        pass
    sampler.set_epoch(1)
    iterator = iter(loader)
    return _seconds(device, lambda: [pairs.views_on(batch, device) for batch in iterator]) / len(loader)


def profile_step(config: Config, steps: int = 5, warmup: int = 2, view_batches: int = 4) -> dict:
    """Where a training step's time goes on this machine: seconds per step in each of `PHASES`
    (median over `steps` phased steps on synthetic inputs, each phase timed with the device
    synchronised at both ends), the plain step timed in the same run, and the views' time per batch
    from the configured data pipeline. The plain step overlaps nothing on a CPU, so there the
    phases add up to it within the timing noise."""
    if config.mixture_k:
        raise ValueError(f"the profile times the plain objective; drop mixture_k={config.mixture_k} (--set mixture_k=0)")
    state, runtime = _training_state(config)
    device = runtime.device
    batch = _synthetic_batch(config)
    times: dict[str, list[float]] = {}

    def clock(phase, work):
        out, seconds = _result_and_seconds(device, work)
        times.setdefault(phase, []).append(seconds)
        return out
    for _ in range(warmup):
        train_step(state, *batch, config, runtime)
    plain, phased = [], []
    for _ in range(steps):  # alternate, so that a drifting machine speed affects both alike
        plain.append(_seconds(device, lambda: train_step(state, *batch, config, runtime)))
        before = sum(map(sum, times.values()))
        _phased_step(state, *batch, config, runtime, clock)
        phased.append(sum(map(sum, times.values())) - before)
    per_step = {phase: sum(times[phase]) / steps for phase in PHASES[1:]}
    per_step = {"views": _views_seconds(config, device, view_batches), **per_step}
    return {"device": str(device), "batch_size": config.batch_size, "phases": per_step,
            "phased_seconds_per_step": statistics.median(phased), "seconds_per_step": statistics.median(plain)}


# ----------------------------------------------------------------------------- against the official code

def alternate(device: torch.device, runs: list, rounds: int = 5, steps: int = 3, warmup: int = 2) -> list[list[float]]:
    """Seconds per call of each of `runs` (functions of no argument), timed in turn in this process:
    `rounds` rounds of `steps` calls each, after `warmup` untimed calls of each, so that a shared
    machine's drift falls on all of them. Returns one list of per-round times per run."""
    for _ in range(warmup):
        for run in runs:
            run()
    times = [[] for _ in runs]
    for _ in range(rounds):
        for run, kept in zip(runs, times):
            kept.append(_seconds(device, lambda: [run() for _ in range(steps)]) / steps)
    return times


def bench_against_official(config: Config, official_dir, rounds: int = 5, steps: int = 3, warmup: int = 2) -> dict:
    """The official code's training step and ours at the same sizes and batch, timed alternately in
    this process on the same synthetic inputs: `rounds` rounds of `steps` steps each, after `warmup`
    untimed steps of both. Returns each side's seconds per step per round and the ratio of medians
    (official / ours: above 1 means this library's step is faster)."""
    state, runtime = _training_state(config)
    device = runtime.device
    batch = _synthetic_batch(config)
    ours = lambda: train_step(state, *batch, config, runtime)  # noqa: E731
    with official_shims(cpu=device.type == "cpu"):
        with contextlib.redirect_stdout(io.StringIO()):  # (the official model prints its encoder's size)
            theirs = OfficialStep(*import_official(official_dir), config, device)
        rounds_ours, rounds_official = alternate(device, [ours, lambda: theirs(*batch)], rounds, steps, warmup)
    ratio = statistics.median(rounds_official) / statistics.median(rounds_ours)
    return {"device": str(device), "batch_size": config.batch_size, "seconds_per_step": rounds_ours,
            "official_seconds_per_step": rounds_official, "speedup": ratio}
