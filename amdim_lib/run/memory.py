"""How much memory a training step of a configuration needs, estimated before anything is allocated.

The encoder and the mixture head are built on PyTorch's meta device (shapes, no storage) and one
training forward pass with the loss runs there, while a hook adds up every tensor autograd keeps for
the backward pass: the activations. Each parameter costs 16 bytes: its fp32 weight, its gradient and
Adam's two moments. n_depth adds one identical unit to every block, so both parts grow linearly with
it: they are measured at depth 1 and 2 and extrapolated, and a deep configuration is never built.

Data-loader workers are separate processes in the host's memory: each costs its own interpreter and the
batches it prefetches. `check_fits` refuses a configuration whose estimate exceeds the memory of the device
it would run on, or whose workers exceed the host's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .build import build_encoder, build_mixture, build_model, objective, usable_cpus
from .presets import Config
from .probes import Probes

BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, Adam's first and second moments
GIB = 2**30
# A forked data-loader worker's own memory (proportional set size): about 200 MiB on Linux with PyTorch 2.x,
# measured on the demo configuration (benchmarks/LOG.md, "Memory of a data-loader worker").
WORKER_BYTES = 200 * 2**20
PREFETCH_BATCHES = 2  # DataLoader's prefetch_factor: batches each worker holds ready


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int          # encoder, mixture head and online probes
    activation_bytes: int    # what one training step keeps for its backward pass
    batch: int               # images per view in that step
    workers: int = 0         # data-loader worker processes (num_workers, at most the usable CPUs)
    worker_bytes: int = 0    # their memory, on the host whatever the device

    @property
    def parameter_bytes(self) -> int:
        return self.parameters * BYTES_PER_PARAMETER

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes

    def on(self, device_type: str) -> int:
        """Bytes on a device of this type: on the CPU the workers share its memory with the step."""
        return self.total_bytes + (self.worker_bytes if device_type == "cpu" else 0)

    def text(self, device_type: str = "cpu") -> str:
        workers = ""
        if self.workers:
            where = "" if device_type == "cpu" else " (on the host)"
            workers = f"; {self.workers} data-loader workers{where}: {self.worker_bytes / GIB:.2f} GiB"
        return (f"at least {self.on(device_type) / GIB:.2f} GiB ({self.parameters:,} parameters: "
                f"{self.parameter_bytes / GIB:.2f} GiB with their gradients and Adam's state; activations of a "
                f"batch of {self.batch}: {self.activation_bytes / GIB:.2f} GiB{workers})")


def estimate_training_memory(config: Config, batch: int | None = None, n_classes: int = 10,
                             half_precision: bool = False) -> MemoryEstimate:
    """The memory one training step of `config` needs with `batch` images per view (default:
    config.batch_size). half_precision: activations under 16-bit autocast (counted at half size)."""
    batch = batch or config.batch_size
    (p1, a1), (p2, a2) = (_measure(config.replace(n_depth=depth), batch, n_classes) for depth in (1, 2))
    extra = config.n_depth - 1
    activations = a1 + extra * (a2 - a1)
    workers = min(config.num_workers, usable_cpus())  # as make_loader bounds them
    view_pair_bytes = 2 * 3 * config.image_size ** 2 * 4  # two float32 views of one image
    return MemoryEstimate(p1 + extra * (p2 - p1), activations // 2 if half_precision else activations, batch,
                          workers, workers * (WORKER_BYTES + PREFETCH_BATCHES * batch * view_pair_bytes))


def _measure(config: Config, batch: int, n_classes: int) -> tuple[int, int]:
    """(parameters, bytes saved for backward) of one training forward pass of `config` on the meta device:
    the model and the objective that training builds (run.build), fed two views of `batch` images."""
    with torch.device("meta"):
        model = build_model(config.replace(compile=False, compile_mode="default"), build_encoder(config),
                            Probes(config.n_rkhs, n_classes, dropout=config.probe_dropout), build_mixture(config))
    weights = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in weights:  # weights are counted as parameters
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    view = torch.empty(batch, 3, config.image_size, config.image_size, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        f1, f2, logits, components = model(view, view)
        loss = objective(config, f1, f2, components, torch.Generator())
    total = sum(saved.values())
    del loss, logits  # (kept until now: while the graph lives, no saved tensor's id is reused)
    return sum(p.numel() for p in model.parameters()), total


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of `device`: a GPU's own; the CPU's physical memory (or the container's limit,
    if lower); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        return recommended() if recommended is not None else _physical_memory()
    if device.type == "cpu":
        return _physical_memory()
    return None


def _physical_memory() -> int | None:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min([physical, *limits])


def check_fits(config: Config, device: torch.device, batch: int | None = None, n_classes: int = 10,
               half_precision: bool = False) -> MemoryEstimate:
    """The estimate for training `config` on `device`; a ValueError with it when it exceeds the
    device's memory (see `estimate_training_memory` for the arguments)."""
    estimate = estimate_training_memory(config, batch, n_classes, half_precision)
    capacity = device_memory(device)
    if capacity is not None and estimate.on(device.type) > capacity:
        fix = "lower batch_size, ndf, n_rkhs, n_depth or mixture_k" + (", or num_workers" if estimate.workers else "")
        raise ValueError(f"training this configuration needs {estimate.text(device.type)}, more than the "
                         f"{capacity / GIB:.1f} GiB of {device}: {fix}")
    host = device_memory(torch.device("cpu")) if device.type != "cpu" else None
    if host is not None and estimate.worker_bytes > host:
        raise ValueError(f"{estimate.workers} data-loader workers need {estimate.worker_bytes / GIB:.1f} GiB, more than "
                         f"the host's {host / GIB:.1f} GiB: lower num_workers")
    return estimate
