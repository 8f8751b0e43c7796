"""The workbook's numeric exercises: each expected answer is computed by the library itself, and
`check` compares a reader's number with it.

Two kinds: an `Exercise` asks for a number; a `Prediction` asks the reader to name, before a run, which of a few
options the run will put first (largest or smallest), and is settled by that run's measurements.

A wrong answer is part of learning, not an error: `check` prints a one-line verdict (`verdict` also
says whether the answer was right), and neither raises for a wrong, missing or malformed answer.

    from amdim_lib.ui import exercises
    exercises.check("negatives", 23471, batch_size=480, target="r7")
    exercises.check("highest_bound", "nwj", measured={"infonce": 4.1, "nwj": 3.2, "mine": 2.9})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.bounds import nce_candidates, nce_mi_lower_bound
from ..core.geometry import receptive_fields
from ..core.mixture import mixture_objective
from ..core.objectives import nce_loss, nce_scores, tanh_clip
from ..run.probes import Probes
from ..analysis.sweep import resolve_variants


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
    """How to compute an exercise's answer, how close a reader's number must be to count as right, and
    the typical mistakes it is meant to catch: {hint naming the mistake: the number that mistake gives}
    in the same setting. A number nearer a mistake than the answer gets that mistake's hint."""

    answer: Callable[..., float]
    tolerance: float  # absolute: 0.5 for counts (exact integers), a rounding margin for real numbers
    mistakes: Callable[..., dict[str, float]] = lambda **setting: {}


EXERCISES = {
    "negatives": Exercise(negatives_per_positive, tolerance=0.5, mistakes=lambda batch_size, target="r7", image_size=32: {
        "the other locations of the positive's own image are not negatives (they are left out of the softmax)":
            batch_size * receptive_fields(image_size)[target].grid ** 2 - 1}),
    "clipped_score": Exercise(clipped_score, tolerance=0.05, mistakes=lambda score, tclip: {
        "the raw score passes through the clip c tanh(u / c) first": float(score)}),
}


@dataclass(frozen=True)
class Prediction:
    """A prediction a run settles: of the options in `measured` ({option: this run's number}), which comes out
    largest (`pick=max`) or smallest (`pick=min`). The reader names one option before the run; the solution
    explains what the run showed."""

    pick: Callable = max
    unit: str = ""  # how the measured numbers read in the verdict, e.g. " nats"

    def answer(self, measured: dict) -> str:
        finite = {option: value for option, value in measured.items() if math.isfinite(value)}
        if not finite:
            raise ValueError(f"a prediction needs this run's finite measurements, {{option: number}}; got {measured!r}")
        return self.pick(finite, key=finite.get)


def _option_key(option) -> str:
    """How an option is matched: case, spaces, underscores and the arrow's spelling ('5->5', '5→5', '5t5') ignored."""
    text = str(option).lower().replace("→", "t").replace("->", "t")
    return "".join(ch for ch in text if ch not in " _-")


def expected(name: str, **setting):
    """The library's answer to exercise `name` in the given setting (e.g. batch_size=480): a number, or for a
    prediction the option this run's `measured` numbers put first."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name].answer(**setting)


def _prediction_verdict(name: str, answer, measured: dict, target: str) -> tuple[bool, str]:
    options = {_option_key(option): option for option in measured}
    chosen = options.get(_option_key(answer)) if isinstance(answer, (str, int, float)) else None
    if chosen is None:
        return False, f"{name}: {answer!r} is not one of the options {list(measured)}; name one of them"
    unit = EXERCISES[name].unit
    shown = ", ".join(f"{option} {measured[option]:.3g}{unit}" for option in measured)
    if chosen == target:
        return True, f"{name}: {chosen!r} is right; this run measured {shown}"
    return False, f"{name}: this run shows {target!r}, not {chosen!r} ({shown}); the solution explains why"


def verdict(name: str, answer, **setting) -> tuple[bool, str]:
    """(whether `answer` is the answer to exercise `name` in `setting`, a one-line verdict for the reader).

    `None` or `...` means "not answered yet"; anything that is not a number (or, for a prediction, not one of
    its options) is reported, not raised.
    """
    target = expected(name, **setting)
    if answer is None or answer is Ellipsis:
        return False, f"{name}: no answer yet; put your answer in place of None and run the cell again"
    if isinstance(EXERCISES[name], Prediction):
        return _prediction_verdict(name, answer, setting["measured"], target)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return False, f"{name}: {answer!r} is not a number; the answer is a single number"
    if not math.isfinite(value):
        return False, f"{name}: {answer!r} is not a finite number"
    mistakes = EXERCISES[name].mistakes(**setting)
    likely = min(mistakes, key=lambda hint: abs(value - mistakes[hint]), default=None)
    slipped = likely is not None and abs(value - mistakes[likely]) < abs(value - target)
    if not slipped and abs(value - target) <= EXERCISES[name].tolerance:
        return True, f"{name}: {value:,.10g} is right"
    why = f"a likely slip: {likely}" if slipped else "the solution shows the working"
    return False, f"{name}: {value:,.10g} is not it; it is too {'high' if value > target else 'low'} ({why})"


def check(name: str, answer, **setting) -> None:
    """Print the verdict on a reader's answer, e.g. check("negatives", 23471, batch_size=480)."""
    print(verdict(name, answer, **setting)[1])


# ---- notebook 01

def receptive_field(image_size: int, feature: str) -> int:
    """Side in pixels of the input patch that one location of `feature` ('r1', 'r5', 'r7') sees."""
    return receptive_fields(image_size)[feature].size


EXERCISES["receptive_field"] = Exercise(receptive_field, tolerance=0.5)
# Which policy's paired views owe the larger share of their difference to geometry alone (level crop / full)?
EXERCISES["geometry_share"] = Prediction(max)


# ---- notebook 02

def infonce_ceiling(batch_size: int) -> float:
    """The most InfoNCE can report with `batch_size` candidates: log K minus a loss of zero."""
    return float(nce_mi_lower_bound(0.0, nce_candidates(batch_size, 1)))


EXERCISES["infonce_ceiling"] = Exercise(infonce_ceiling, tolerance=0.01, mistakes=lambda batch_size: {
    "the positive is one of the K candidates: the ceiling is log K, not log(K - 1)": math.log(batch_size - 1)})
# Which learned critic's bound reads highest at the staircase's top level, far above log K?
EXERCISES["highest_bound"] = Prediction(max, unit=" nats")


# ---- notebook 06

def sweep_trained_runs(variants, n_seeds: int) -> int:
    """Training runs a sweep of `variants` (names, or 'all') over `n_seeds` seeds performs: one per
    (variant, seed), except the untrained baselines, which are probed without a single update."""
    if n_seeds < 1:
        raise ValueError(f"a sweep needs at least one seed, got n_seeds={n_seeds}")
    chosen = resolve_variants(variants)
    return sum(variant.method != "random" for variant in chosen.values()) * n_seeds


EXERCISES["sweep_runs"] = Exercise(sweep_trained_runs, tolerance=0.5)
# Which trained variant scores lowest (mean linear-probe accuracy over the seeds)?
EXERCISES["weakest_variant"] = Prediction(min)


# ---- notebook 07

def mixture_score_gradient(scores, tau: float, alpha: float, component: int = 0) -> float:
    """dJ/ds_j of the mixture objective at one location with the given component scores, by autograd
    through the library's `mixture_objective`."""
    s = torch.tensor([float(v) for v in scores], dtype=torch.float64).reshape(1, -1, 1).requires_grad_()
    mixture_objective(s, tau, alpha)["objective"].backward()
    return float(s.grad[0, component, 0])


EXERCISES["mixture_gradient"] = Exercise(mixture_score_gradient, tolerance=0.01)
# Which number of components k gives the mixture's segments the best IoU with the shapes' masks?
EXERCISES["best_components"] = Prediction(max)


# ---- notebooks 03-05

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


def linear_probe_parameters(n_features: int, n_classes: int) -> int:
    """Weights and biases of the online linear probe on `n_features` inputs for `n_classes` classes."""
    return sum(p.numel() for p in Probes(n_features, n_classes, hidden=1).linear.parameters())


EXERCISES.update({
    "nce_row_loss": Exercise(nce_row_loss, tolerance=1e-3, mistakes=lambda src, trg, row=0, tclip=20.0: {
        "the scores pass through the tanh clip c tanh(u / c) before the softmax": nce_row_loss(src, trg, row, None)}
        if tclip else {}),
    "chance_loss": Exercise(chance_loss, tolerance=0.01, mistakes=lambda batch_size, target="r7", image_size=32: {
        "the positive is a candidate too: log(1 + negatives), not log(negatives)":
            math.log(negatives_per_positive(batch_size, target, image_size))}),
    "linear_probe_parameters": Exercise(linear_probe_parameters, tolerance=0.5),
    # 03: which task's loss falls most (nats) over the short training?
    "fastest_task": Prediction(max, unit=" nats"),
    # 04: in which half of the updates does the online linear probe gain more test accuracy?
    "probe_gain_half": Prediction(max),
    # 05: on which features does kNN fare best against the linear probe (kNN minus linear accuracy)?
    "knn_favoured": Prediction(max),
})
