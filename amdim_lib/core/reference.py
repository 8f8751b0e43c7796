"""A loop-based reference implementation of the AMDIM objective, written for reading, not for speed.

`amdim_lib.core.objectives` computes every score of a batch with one matmul and the loss with masked
log-sum-exps. Here the same quantities are spelled out one score and one positive at a time:

    u[i, j, l] = <src_i, trg_j,l> / sqrt(D)                   a score (source i, target image j, location l)
    z = c * tanh(u / c)                                        soft clipping
    loss(i, l) = -[z[i,i,l] - log(exp z[i,i,l] + sum_{j != i, l'} exp z[i,j,l'])]
    NCE loss = mean over the positives (i, l);  logit_reg = mean over all u of u^2

The functions take the same arguments and return the same values as `nce_loss` and `amdim_loss`; the
tests check that the two agree to 1e-5 in float64. Use small batches: the cost is B * B * L Python steps.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .encoder import Features
from .objectives import TASKS


def slow_nce_scores(src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Raw scores u[i, j, l] of sources (B, D) against targets (B, D, L) or (B, D, H, W), one dot product at a time."""
    batch, dim = src.shape
    trg = trg.reshape(batch, dim, -1)
    n_loc = trg.shape[2]
    scores = torch.empty(batch, batch, n_loc, dtype=src.dtype)
    for i in range(batch):              # source image
        for j in range(batch):          # target image
            for l in range(n_loc):      # target location
                scores[i, j, l] = torch.dot(src[i], trg[j, :, l]) / math.sqrt(dim)
    return scores


def slow_nce_loss(src: torch.Tensor, trg: torch.Tensor, tclip: float | None = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The NCE loss of one source-target pair and its logit regulariser, one positive at a time.

    Same contract as `amdim_lib.core.objectives.nce_loss`: positives are (i, i, l) for every location l of
    the matching image, the negatives of source i are every location of every other image.
    """
    u = slow_nce_scores(src, trg)
    logit_reg = (u ** 2).mean()
    z = tclip * torch.tanh(u / tclip) if tclip else u
    batch, _, n_loc = z.shape
    losses = []
    for i in range(batch):
        negatives = torch.cat([z[i, j] for j in range(batch) if j != i])  # (B - 1) * L scores
        for l in range(n_loc):
            positive = z[i, i, l]
            # -log softmax of the positive among itself and the negatives (log-sum-exp for stability)
            log_denominator = torch.logsumexp(torch.cat([positive.view(1), negatives]), 0)
            losses.append(-(positive - log_denominator))
    return torch.stack(losses).mean(), logit_reg


def slow_amdim_loss(f1: Features, f2: Features, tclip: float | None = 20.0, reg_weight: float = 0.05,
                    tasks: Sequence[str] = TASKS, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The multiscale AMDIM loss with the loop-based NCE; same contract and keys as `objectives.amdim_loss`.

    For 5t5 the source of each image is one r5 location drawn uniformly with
    `torch.randint(H * W, (B,), generator=generator)`, first for direction 1->2, then 2->1; with a
    generator in the same state both implementations draw the same locations.
    """
    out = {}
    reg = torch.zeros((), dtype=f1.r1.dtype)
    for task in tasks:
        terms, regs = [], []
        for a, b in ((f1, f2), (f2, f1)):  # both directions: view 1 predicts view 2, and back
            if task == "5t5":
                batch, dim, height, width = a.r5.shape
                index = torch.randint(height * width, (batch,), generator=generator)
                src = torch.stack([a.r5[i, :, index[i] // width, index[i] % width] for i in range(batch)])
                trg = b.r5
            else:
                src = a.r1.flatten(1)
                trg = b.r5 if task == "1t5" else b.r7
            loss, lreg = slow_nce_loss(src, trg, tclip)
            terms.append(loss)
            regs.append(lreg)
        out[task] = (terms[0] + terms[1]) / 2
        reg = reg + (regs[0] + regs[1]) / 2
    out["reg"] = reg_weight * reg
    out["loss"] = sum(out[t] for t in tasks) + out["reg"]
    return out
