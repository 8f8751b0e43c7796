"""The online probes: classifiers trained on the detached global feature r1 alongside the encoder, with
the official code's loss (clipped logits and a penalty on their size). They measure the representation
during training and never change it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.objectives import tanh_clip

# The official probes' loss: cross-entropy on logits softly clipped to +-10, plus a small penalty on
# the squared raw logits (both keep the probes' logits from growing without bound).
PROBE_CLIP = 10.0
PROBE_LOGIT_PENALTY = 1e-3


class Probes(nn.Module):
    """Online classifiers on the detached global feature: linear, and MLP as in the paper.

    (The MLP's first layer keeps a bias, which the official code leaves out: batch norm follows it,
    so the bias changes no output and no gradient, and checkpoints keep their keys.)
    """

    def __init__(self, n_in: int, n_classes: int, hidden: int = 1024, dropout: float = 0.2):
        super().__init__()
        self.linear = nn.Linear(n_in, n_classes)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"linear": self.linear(h), "mlp": self.mlp(h)}


def probe_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The official probes' loss: cross-entropy of PROBE_CLIP * tanh(logits / PROBE_CLIP) over the labelled
    rows (label >= 0) plus PROBE_LOGIT_PENALTY x the mean squared raw logit over every row."""
    logits, labelled = logits.float(), labels >= 0  # (under autocast the probes may return bf16/fp16)
    penalty = PROBE_LOGIT_PENALTY * logits.pow(2).mean()
    if not labelled.any():
        return penalty
    return F.cross_entropy(tanh_clip(logits[labelled], PROBE_CLIP), labels[labelled]) + penalty
