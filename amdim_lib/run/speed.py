"""Speed rules for the machine at hand, applied from outside the method (core/ never sees them).

Each rule changes how a result is computed, never what: a run with every rule off computes the same
step up to float rounding (tests/test_speed.py), and `python -m amdim_lib bench --preset paper
--batch-size 64 --no-data --speed-rules` times the step with the rules against the step without them.

- bf16 on the CPU (`autocast_dtype`): amp=auto takes bf16 where a probe convolution runs at least
  BF16_MIN_SPEEDUP times float32's speed. Measured on an Intel Xeon with AMX (2.6-4.1x) and two AMD
  EPYCs with AVX-512 BF16 (whole steps 1.8-2.3x); emulated bf16 elsewhere is many times slower.
- Convolutions as matmuls (`use_matmul_convolutions`, config.matmul_convolutions): the last unit's
  3x3 on a 3x3 map (backward 3-8x faster as a matmul, every CPU measured), kxk convolutions of at
  least WIDE channels on the CPU, and 1x1 convolutions of at least WIDE channels in bf16 on the CPU.
  Measured on two AMD EPYCs (AVX-512 BF16) and an Intel Xeon (AMX), each also with oneDNN capped at
  AVX2: whole paper-size steps 1.04-1.14x faster on one CPU, about even on the others
  (benchmarks/LOG.md). The demo's small encoder only meets the first rule.
- Freed memory kept for reuse (`keep_freed_memory`): glibc's malloc otherwise unmaps every block above
  32 MiB when freed, so each step faults its large maps in again (whole CPU steps 1.01-1.12x).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


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


def execution_summary(config, device: torch.device, dtype: torch.dtype | None) -> str:
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


class MatmulConv2d(nn.Conv2d):
    """nn.Conv2d that computes itself as one matmul where that was measured faster (see the module's
    docstring); the same parameters, the same result up to float rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _patches_win(self, x):
            return _patch_matmul(self, x)
        if self.kernel_size == (1, 1) and _wide_bf16_cpu(self, x):
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


def use_matmul_convolutions(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap every plain nn.Conv2d of `module` for a MatmulConv2d in place (enabled=False swaps back).

    Only the class changes: parameters, buffers, state-dict keys and an optimiser built earlier stay."""
    plain, fast = (nn.Conv2d, MatmulConv2d) if enabled else (MatmulConv2d, nn.Conv2d)
    for conv in module.modules():
        if type(conv) is plain:
            conv.__class__ = fast
    return module


WIDE = 512  # measured on two AMD EPYCs (AVX-512 BF16) and an Intel Xeon (AMX), each also at AVX2 (LOG.md)


def _patch_matmul(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A stride-1 unpadded convolution as (B, h, w, k*k*C) patches times the flattened kernel."""
    kh, kw = conv.kernel_size
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    if torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type):
        # Cast the map here, not its k*k times larger patches in F.linear.
        x = x.to(torch.get_autocast_dtype(x.device.type))
    rows = x.permute(0, 2, 3, 1)  # (B, H, W, C): a view of a channels-last map
    if (h, w) == (1, 1):
        patches = rows.reshape(len(x), 1, 1, -1)
    else:  # (i, j, C) order, as the kernel flattens below
        patches = torch.stack([rows[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], 3).flatten(3)
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)
    return F.linear(patches, weight, conv.bias).permute(0, 3, 1, 2)


def _patches_win(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    plain = conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
    whole_map = x.shape[-2:] == conv.kernel_size
    wide_on_cpu = (x.device.type == "cpu" and conv.kernel_size != (1, 1) and conv.in_channels >= WIDE
                   and conv.stride == (1, 1))
    return plain and (whole_map or wide_on_cpu)


def _wide_bf16_cpu(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and min(conv.in_channels, conv.out_channels) >= WIDE and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1 and x.is_contiguous(memory_format=torch.channels_last))


def prepare_device(device: torch.device) -> None:
    """Process-wide settings for training on `device`: on CUDA cuDNN's autotuner (fixed input shapes:
    the fastest kernels are picked once), on the CPU freed memory kept for the next step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
