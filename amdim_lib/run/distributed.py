"""Data-parallel training across processes (torchrun), on GPUs (NCCL) or CPUs (gloo).

What changes with N processes, and why:
- each process takes its slice of every global batch (`EpochSampler`), so N processes see exactly
  the batches that one process would see with the same `batch_size` (the global batch);
- NCE negatives span the global batch: target features are gathered from every rank with their
  gradients (`gather_with_grad`), as in the official code;
- batch norm statistics span the global batch (`SyncedBatchNorm`; per view when the views are
  normalised separately), so one DDP step equals one single-process step on the concatenated batch;
- rank 0 logs and writes checkpoints; every rank resumes from the same file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..core.encoder import ViewBatchNorm2d
from ..core.objectives import GlobalBatch


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even with one process: the DDP path runs)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    def global_batch(self) -> GlobalBatch:
        """This process's place in the global batch, for the objectives' negatives."""
        return GlobalBatch(self.rank, self.world_size, lambda tensor: gather_with_grad(tensor, self))


_feature_group = None  # collectives inside forward/backward (feature gathers, BN sums)


def _features_group():
    # DDP all-reduces gradients on the default group while backward runs; collectives issued by
    # backward itself go through a group of their own so the two streams can never interleave.
    global _feature_group
    if _feature_group is None:
        _feature_group = dist.new_group()
    return _feature_group


def setup(device_type: str) -> Context:
    """Join the process group that torchrun describes in the environment; a no-op without torchrun."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    _features_group()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), launched=True)


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


def any_rank(flag: bool, context: Context) -> bool:
    """True when `flag` is true on any rank (so that all ranks stop at the same step)."""
    if not context.enabled:
        return flag
    value = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    (Written out because the gloo path of torch.distributed.nn's all_gather, which goes through an
    all-to-all, returned misrouted gradients in our tests; all_reduce + slice is simple and exact.)
    """

    @staticmethod
    def forward(ctx, tensor):
        ctx.batch, ctx.rank = tensor.shape[0], dist.get_rank()
        chunks = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, tensor.contiguous(), group=_features_group())
        return torch.cat(chunks)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=_features_group())  # every rank's loss depends on this rank's slice
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]


class _SumWithGrad(torch.autograd.Function):
    """all_reduce (sum) whose backward is the same sum: every rank's output depends on every rank's input.
    (Written out: torch.distributed.nn's all_reduce is deprecated and warns on every call.)"""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total, group=_features_group())
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=_features_group())
        return total


def mean_over_ranks(values: dict[str, torch.Tensor], context: Context) -> dict[str, torch.Tensor]:
    """The average of each scalar over ranks (for logging the global batch's losses)."""
    if not context.enabled:
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / context.world_size))


def gather_with_grad(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """Every rank's `tensor` concatenated along dim 0 in rank order; gradients flow back to each owner."""
    return _GatherWithGrad.apply(tensor) if context.enabled else tensor


class SyncedBatchNorm(ViewBatchNorm2d):
    """Batch norm whose training statistics span every rank (a differentiable all-reduce of the sums).

    Unlike nn.SyncBatchNorm it also runs on CPUs (gloo), and it takes 2-D to 4-D inputs. With one
    process it is plain batch norm. As a ViewBatchNorm2d it normalises stacked views separately
    (`views_in_batch`): each view's statistics then span that view's images on every rank.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2-D, 3-D or 4-D input, got {x.dim()}-D")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().normalise(x)
        dtype, x = x.dtype, x.float()  # statistics in float32, whatever precision autocast gives the convolutions
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        sums = _SumWithGrad.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        n = sums[-1]
        mean = sums[:channels] / n
        var = sums[channels:2 * channels] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out).to(dtype)


def sync_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in `module` by a SyncedBatchNorm sharing its parameters and
    buffers (the same tensor objects, so an optimiser built earlier keeps updating them)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            synced._parameters, synced._buffers = child._parameters, child._buffers
            setattr(module, name, synced)
        else:
            sync_batch_norms(child)
    return module


def wrap(model: nn.Module, device: torch.device, tasks) -> nn.Module:
    """`model` with synced batch norm inside DistributedDataParallel (a task subset leaves a head unused)."""
    sync_batch_norms(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=set(tasks) != {"1t5", "1t7", "5t5"})


# What gloo and NCCL say when a process of the group has gone (its sockets closed, or it never answers).
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
              "NCCL communicator was aborted", "remote process exited", "Read error", "Timed out")


def lost_peer(error: BaseException, context: Context) -> str | None:
    """One line naming the rank that left a distributed run, when `error` says one did; else None."""
    text = str(error)
    if not context.enabled or not any(marker in text for marker in _LOST_PEER):
        return None
    others = [r for r in range(context.world_size) if r != context.rank]
    who = f"rank {others[0]}" if len(others) == 1 else f"another rank (of {', '.join(map(str, others))})"
    return f"rank {context.rank}: {who} of this run stopped ({text.strip().splitlines()[0][:160]})"
