"""The AMDIM objective: NCE between a source feature and every location of a target feature map.

For one source-target pair the scores of a whole batch come from a single matmul:

    scores[i, j, l] = <src_i, trg_j,l> / sqrt(D)        (B, B, L)

The positives are scores[i, i, l] (every location of the same image), the negatives every location
of every other image. Scores are softly clipped with c * tanh(u / c) before the softmax, and the
mean of the raw squared scores is returned as a regulariser that keeps them small.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch

from .encoder import Features

TASKS = ("1t5", "1t7", "5t5")


def _this_process_only(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class GlobalBatch(NamedTuple):
    """Where this process's images sit in the global batch of data-parallel training.

    With several processes each holds `1/world_size` of the batch; `gather` concatenates every process's
    tensor along dim 0 in rank order, with gradients flowing back to each owner, so the negatives span
    the global batch as in the official code (amdim_lib.run.distributed supplies it). The default is
    one process holding the whole batch.
    """

    rank: int = 0
    world_size: int = 1
    gather: Callable[[torch.Tensor], torch.Tensor] = _this_process_only


def tanh_clip(x: torch.Tensor, clip: float | None = 20.0) -> torch.Tensor:
    """Soft clipping c * tanh(x / c): linear near zero, bounded by +-c. `None` or 0 disables it."""
    return clip * torch.tanh(x / clip) if clip else x


def nce_scores(src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Raw scores (B, B', L) of sources (B, D) against targets (B', D, L) or (B', D, H, W)."""
    dim = src.shape[1]
    trg = trg.reshape(trg.shape[0], dim, -1)
    # One (B, D) x (D, B'*L) matmul gives every source-target score.
    flat = trg.transpose(0, 1).reshape(dim, -1)
    return (src @ flat).view(src.shape[0], trg.shape[0], -1) / math.sqrt(dim)


def nce_loss(src: torch.Tensor, trg: torch.Tensor, tclip: float | None = 20.0,
             pos_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """AMDIM NCE loss for one source-target pair and the (unweighted) logit regulariser.

    For each positive (i, l) the loss is -[z_iil - log(exp z_iil + sum_{j != i, l'} exp z_ijl')]
    with z the clipped scores; the result is the mean over all positives. With targets gathered
    from several processes, source i's own image is target i + pos_offset.
    """
    if (src.dim() != 2 or trg.dim() not in (3, 4) or trg.shape[1] != src.shape[1]
            or trg.shape[0] < src.shape[0] + pos_offset):
        raise ValueError(f"expected src (B, D) and trg (B, D, L) or (B, D, H, W), got {tuple(src.shape)}, {tuple(trg.shape)}")
    scores = nce_scores(src, trg)
    logit_reg = scores.pow(2).mean()
    z = tanh_clip(scores, tclip)
    rows = torch.arange(z.shape[0], device=z.device)
    same_image = (rows[:, None] + pos_offset == torch.arange(z.shape[1], device=z.device)[None, :]).unsqueeze(-1)
    positives = z[rows, rows + pos_offset]                                          # (B, L): z[i, i, l]
    negatives = z.masked_fill(same_image, float("-inf")).flatten(1).logsumexp(1)    # (B,): log sum over j != i, l'
    log_prob = positives - torch.logaddexp(positives, negatives.unsqueeze(1))
    return -log_prob.mean(), logit_reg


def random_location(features: torch.Tensor, generator: torch.Generator | None = None,
                    batch: GlobalBatch = GlobalBatch()) -> torch.Tensor:
    """One uniformly drawn location per image of a (B, D, H, W) map, as (B, D).

    Data-parallel ranks draw the locations of the whole global batch from the same generator and
    keep their own slice, exactly as one process would.
    """
    n, dim = features.shape[:2]
    # (B, L, D): a view of a channels-last map, so that its gradient keeps the map's layout.
    flat = features.permute(0, 2, 3, 1).reshape(n, -1, dim)
    index = torch.randint(flat.shape[1], (n * batch.world_size,), generator=generator,
                          device=generator.device if generator is not None else "cpu")
    index = index[batch.rank * n:(batch.rank + 1) * n].to(flat.device)
    return flat[torch.arange(n, device=flat.device), index]


def _as_float(f: Features) -> Features:
    # Under autocast the features may be bf16/fp16; the softmax over many negatives wants float32.
    return Features(*(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in f))


def amdim_loss(
    f1: Features,
    f2: Features,
    tclip: float | None = 20.0,
    reg_weight: float = 0.05,
    tasks: Sequence[str] = TASKS,
    generator: torch.Generator | None = None,
    batch: GlobalBatch = GlobalBatch(),
) -> dict[str, torch.Tensor]:
    """Multiscale AMDIM loss between the features of two views of the same images.

    Each task predicts across views in both directions, and the two directions are averaged:
    1t5 (global r1 -> local r5), 1t7 (r1 -> r7), 5t5 (one random r5 location -> all r5 locations).
    Returns a dict with the total `loss`, the NCE term of each task and the weighted regulariser `reg`.
    In data-parallel training (`batch`), targets are gathered from every rank, so the negatives
    span the global batch.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}")
    f1, f2 = _as_float(f1), _as_float(f2)
    offset = batch.rank * f1.r1.shape[0]  # where this rank's images sit among the gathered targets
    # Targets of the other view: the local maps the tasks read (the sources stay on this rank).
    def gathered(t: torch.Tensor, needed: bool):
        return batch.gather(t) if needed else None
    t1, t2 = (Features(f.r1, gathered(f.r5, bool({"1t5", "5t5"} & set(tasks))), gathered(f.r7, "1t7" in tasks))
              for f in (f1, f2))
    out: dict[str, torch.Tensor] = {}
    reg = torch.zeros((), device=f1.r1.device, dtype=f1.r1.dtype)
    for task in tasks:
        terms, regs = [], []
        for a, b in ((f1, t2), (f2, t1)):
            if task == "5t5":
                src, trg = random_location(a.r5, generator, batch), b.r5
            else:
                src, trg = a.r1.flatten(1), (b.r5 if task == "1t5" else b.r7)
            loss, lreg = nce_loss(src, trg, tclip, pos_offset=offset)
            terms.append(loss)
            regs.append(lreg)
        out[task] = (terms[0] + terms[1]) / 2
        reg = reg + (regs[0] + regs[1]) / 2
    out["reg"] = reg_weight * reg
    out["loss"] = sum(out[t] for t in tasks) + out["reg"]
    return out
