"""The workbook's numeric exercises: each expected answer is computed by the library itself, and
`check` compares a reader's number with it.

A wrong answer is part of learning, not an error: `check` prints a one-line verdict (`verdict` also
says whether the answer was right), and neither raises for a wrong, missing or non-numeric answer.

    from amdim_lib import exercises
    exercises.check("negatives", 23471, batch_size=480, target="r7")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .geometry import receptive_fields
from .objectives import nce_loss, nce_scores, tanh_clip
from .train import Probes, lr_factor


def negatives_per_positive(batch_size: int, target: str = "r7", image_size: int = 32) -> int:
    """Candidates that are not the positive, for one (source, positive location) pair of the 1->target task.

    Read off the shape of the library's own scores of one source against a batch of targets, (1, B, L):
    every location of every other image in the batch is a negative.
    """
    if batch_size < 2:
        raise ValueError(f"a batch needs at least 2 images to have negatives, got batch_size={batch_size}")
    fields = receptive_fields(image_size)
    if target not in fields or target == "r1":
        raise ValueError(f"target must be a local map, 'r5' or 'r7', got {target!r}")
    grid = fields[target].grid
    scores = nce_scores(torch.zeros(1, 1), torch.zeros(batch_size, 1, grid, grid))
    other_images, locations = scores.shape[1] - 1, scores.shape[2]
    return other_images * locations


def clipped_score(score: float, tclip: float) -> float:
    """The score z the NCE softmax sees for a raw score u, after the objective's tanh clipping at c = tclip."""
    return float(tanh_clip(torch.tensor(float(score), dtype=torch.float64), tclip))


@dataclass(frozen=True)
class Exercise:
    """How to compute an exercise's answer and how close a reader's number must be to count as right."""

    answer: Callable[..., float]
    tolerance: float  # absolute: 0.5 for counts (exact integers), a rounding margin for real numbers


EXERCISES = {
    "negatives": Exercise(negatives_per_positive, tolerance=0.5),
    "clipped_score": Exercise(clipped_score, tolerance=0.05),
}


def expected(name: str, **setting) -> float:
    """The library's answer to exercise `name` in the given setting (e.g. batch_size=480)."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name].answer(**setting)


def verdict(name: str, answer, **setting) -> tuple[bool, str]:
    """(whether `answer` is the answer to exercise `name` in `setting`, a one-line verdict for the reader).

    `None` or `...` means "not answered yet"; anything that is not a number is reported, not raised.
    """
    target = expected(name, **setting)
    if answer is None or answer is Ellipsis:
        return False, f"{name}: no answer yet; put your number in place of None and run the cell again"
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return False, f"{name}: {answer!r} is not a number; the answer is a single number"
    if not math.isfinite(value):
        return False, f"{name}: {answer!r} is not a finite number"
    if abs(value - target) <= EXERCISES[name].tolerance:
        return True, f"{name}: {value:,.10g} is right"
    return False, (f"{name}: {value:,.10g} is not it; it is too {'high' if value > target else 'low'} "
                   "(the solution shows the working)")


def check(name: str, answer, **setting) -> None:
    """Print the verdict on a reader's answer, e.g. check("negatives", 23471, batch_size=480)."""
    print(verdict(name, answer, **setting)[1])


# ---- notebook 03-05

def nce_row_loss(src: torch.Tensor, trg: torch.Tensor, row: int = 0, tclip: float | None = 20.0) -> float:
    """The NCE loss of one source row (its mean over the row's L positives): the library's nce_loss
    given that row alone, with the batch of targets in which its own image is target `row`."""
    if not 0 <= row < len(src):
        raise ValueError(f"row must index a source of the batch (0..{len(src) - 1}), got {row}")
    return float(nce_loss(src[row:row + 1], trg, tclip, pos_offset=row)[0])


def chance_loss(batch_size: int, target: str = "r7", image_size: int = 32) -> float:
    """The NCE loss when every score is equal: the library's loss of all-zero features, log(1 + negatives)."""
    negatives = negatives_per_positive(batch_size, target, image_size)
    locations = negatives // (batch_size - 1)
    return float(nce_loss(torch.zeros(batch_size, 1), torch.zeros(batch_size, 1, locations), tclip=None)[0])


def warmup_factor(step: int, warmup_steps: int, milestone_steps: tuple[int, ...] = (), gamma: float = 0.2) -> float:
    """The training schedule's factor on the base learning rate at update `step` (counted from 0)."""
    return lr_factor(step, warmup_steps, list(milestone_steps), gamma)


def linear_probe_parameters(n_features: int, n_classes: int) -> int:
    """Weights and biases of the online linear probe on `n_features` inputs for `n_classes` classes."""
    return sum(p.numel() for p in Probes(n_features, n_classes, hidden=1).linear.parameters())


EXERCISES.update({
    "nce_row_loss": Exercise(nce_row_loss, tolerance=1e-3),
    "chance_loss": Exercise(chance_loss, tolerance=0.01),
    "warmup_factor": Exercise(warmup_factor, tolerance=0.005),
    "linear_probe_parameters": Exercise(linear_probe_parameters, tolerance=0.5),
})
