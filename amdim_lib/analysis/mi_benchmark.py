"""The MI-bound benchmark of Poole et al. (2019): critics trained on a staircase of known MI levels, the
estimators at the true critic, and the bias and spread tables the notebooks show.

The estimators and critics are amdim_lib.core.bounds; the figures amdim_lib.ui.bound_plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from ..core.bounds import (ESTIMATORS, LABELS, MLP, NEEDS_BASELINE, infonce, make_critic, make_estimator, rho_from_mi,
                           sample_correlated_gaussian, true_critic)
from ..core.objectives import tanh_clip
from .results import markdown_table
from .timing import torch_threads

MI_LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)

# E[InfoNCE] of the true critic on the d = 20 benchmark with K = 64 (it has no closed form), from
# `infonce_true_critic_reference(mi, 20, 64, n_batches, seed=12345)` with 200,000 batches at MI 2, 4, 6 and
# 50,000 at MI 8, 10: standard errors 0.0005, 0.0004, 0.0003, 0.0003 and 0.0002 nats.
INFONCE_TRUE_CRITIC_D20_K64 = {2.0: 1.8120, 4.0: 3.0666, 6.0: 3.7371, 8.0: 4.0228, 10.0: 4.1218}


def mi_staircase(levels: Sequence[float], steps_per_level: int) -> np.ndarray:
    """The true MI at each training step: equal phases at each level."""
    return np.repeat(np.asarray(levels, dtype=float), steps_per_level)


def nwj_true_critic_std(mi: float, d: int, batch_size: int) -> float:
    """Exact standard deviation of the NWJ estimate at its optimal critic f = 1 + log w (w the density
    ratio p(y|x)/p(y)) on one batch of K.

    NWJ = 1 + mean_i log w_ii - mean_{i != j} w_ij. Since E_y w(x, y) = E_x w(x, y) = 1, the only
    correlated pairs of terms are w_ij with w_ji; per coordinate Var_p(log w) = rho^2 and
    E_{p(x)p(y)}[w^2] = 1 / (1 - rho^2), and E[w_ij w_ji] is a Gaussian integral (computed here exactly).
    Var = d rho^2 / K + (E_{p(x)p(y)}[w^2] - 1 + Cov(w_ij, w_ji)) / (K (K - 1)).
    """
    rho = rho_from_mi(mi, d)
    k = batch_size
    c = 1.0 - rho * rho
    # One coordinate: z = (x1, y1, x2, y2), the pairs (x1, y1) and (x2, y2) independent, each with correlation rho.
    sigma = np.kron(np.eye(2), np.array([[1.0, rho], [rho, 1.0]]))
    # r(x1, y2) r(x2, y1) = c^{-1} exp(-z^T B z / 2); the Gaussian integral works out to 1 / (1 - rho^4).
    b = np.diag([rho * rho] * 4) / c
    for i, j in ((0, 3), (1, 2)):
        b[i, j] = b[j, i] = -rho / c
    cross = (1.0 / c) / math.sqrt(np.linalg.det(np.eye(4) + sigma @ b))  # E[r_ij r_ji], one coordinate
    second_moment = 1.0 / c                                              # E_q[r^2] = E_p[r], one coordinate
    variance = d * rho * rho / k + (second_moment ** d - 1.0 + cross ** d - 1.0) / (k * (k - 1))
    return math.sqrt(variance)


@torch.no_grad()
def true_critic_estimates(mi_levels: Sequence[float] = MI_LEVELS, d: int = 20, batch_size: int = 64,
                          n_batches: int = 500, seed: int = 0, estimators: Sequence[str] = ("infonce", "nwj"),
                          tclip: float | None = None, threads: int | None = 1) -> dict[str, np.ndarray]:
    """Each estimator at its optimal critic on `n_batches` fresh batches per MI level: name -> (levels, n_batches).

    The true critic is log w = log p(y|x)/p(y); NWJ gets 1 + log w, where it is tight. `tclip` passes the
    critic through AMDIM's soft clipping c tanh(f / c) first (any critic gives a valid bound, so the
    clipped one still does). Float64, so that exp of large ratios stays finite.
    """
    return clipped_true_critic_estimates((tclip,), mi_levels, d, batch_size, n_batches, seed, estimators,
                                         threads)[tclip]


@torch.no_grad()
def clipped_true_critic_estimates(clips: Sequence[float | None], mi_levels: Sequence[float] = MI_LEVELS, d: int = 20,
                                  batch_size: int = 64, n_batches: int = 500, seed: int = 0,
                                  estimators: Sequence[str] = ("infonce", "nwj"),
                                  threads: int | None = 1) -> dict:
    """`true_critic_estimates` for several clipping levels on the same batches: clip -> name -> (levels, n_batches)."""
    generator = torch.Generator().manual_seed(seed)
    out = {clip: {name: np.empty((len(mi_levels), n_batches)) for name in estimators} for clip in clips}
    with torch_threads(threads):
        for row, mi in enumerate(mi_levels):
            rho = rho_from_mi(mi, d)
            x, y = sample_correlated_gaussian(batch_size, d, rho, generator, (n_batches,), dtype=torch.float64)
            scores = true_critic(x, y, rho)
            for clip in clips:
                for name in estimators:
                    shift = 1.0 if name == "nwj" else 0.0
                    out[clip][name][row] = make_estimator(name)(tanh_clip(scores + shift, clip)).numpy()
    return out


@torch.no_grad()
def infonce_true_critic_reference(mi: float, d: int = 20, batch_size: int = 64, n_batches: int = 200_000,
                                  seed: int = 12345, chunk: int = 2_000) -> tuple[float, float]:
    """Monte-Carlo expectation of InfoNCE at the true critic, and its standard error (no closed form exists)."""
    generator = torch.Generator().manual_seed(seed)
    rho = rho_from_mi(mi, d)
    values = []
    for start in range(0, n_batches, chunk):
        n = min(chunk, n_batches - start)
        x, y = sample_correlated_gaussian(batch_size, d, rho, generator, (n,), dtype=torch.float64)
        values.append(infonce(true_critic(x, y, rho)))
    values = torch.cat(values)
    return values.mean().item(), values.std().item() / math.sqrt(n_batches)


# ----------------------------------------------------------------------------------------------------
# The staircase experiment (Poole et al. 2019, Fig. 2)
# ----------------------------------------------------------------------------------------------------

@dataclass
class StaircaseResult:
    """Estimates per step for each estimator label, beside the true MI of each step."""
    estimates: dict[str, np.ndarray]
    true_mi: np.ndarray
    levels: tuple[float, ...]
    steps_per_level: int
    batch_size: int
    seconds: float
    d: int = 20
    specs: dict[str, dict] = field(default_factory=dict)
    score_rms: dict[str, np.ndarray] = field(default_factory=dict)   # sqrt(mean f^2) of the raw scores per step

    @property
    def log_k(self) -> float:
        return math.log(self.batch_size)


def _as_specs(estimators) -> dict[str, dict]:
    if isinstance(estimators, Mapping):
        return {label: dict(spec) for label, spec in estimators.items()}
    return {LABELS.get(name, name): {"estimator": name} for name in estimators}


def train_staircase(estimators: Sequence[str] | Mapping[str, dict] = ESTIMATORS, *, d: int = 20,
                    batch_size: int = 64, levels: Sequence[float] = MI_LEVELS, steps_per_level: int = 4000,
                    lr: float = 5e-4, critic: str = "separable", hidden: int = 256, layers: int = 2,
                    embed_dim: int = 32, baseline_hidden: int = 64, seed: int = 0, threads: int | None = 1,
                    progress: bool = False) -> StaircaseResult:
    """Train one critic per estimator, all at once, on the MI staircase; return every step's estimate.

    `estimators` is a list of names from ESTIMATORS, or a mapping label -> spec with the keys
    `estimator` (a name), optional estimator options (`alpha`, `clip`, `momentum`), `tclip` (AMDIM's soft
    clipping c tanh(f / c) of the scores) and `reg_weight` (weight of mean(f^2), AMDIM's logit regulariser).
    The critics form one ensemble evaluated with batched matmuls, and every critic sees the same batch;
    since each critic only receives the gradient of its own estimate, the sum of the losses trains them
    independently (Adam's update is elementwise). TUBA and alpha also learn a log-baseline a(y), an MLP.
    A critic whose estimate is not finite skips that update, and the step is recorded as NaN.

    `threads`: torch threads while training (restored afterwards; see `torch_threads`; None keeps the
    current setting). The matrices are small (K x 256), so one thread is the fast choice.
    """
    with torch_threads(threads):
        return _train_staircase(_as_specs(estimators), d, batch_size, levels, steps_per_level, lr, critic, hidden,
                                layers, embed_dim, baseline_hidden, seed, progress)


def _train_staircase(specs, d, batch_size, levels, steps_per_level, lr, critic, hidden, layers, embed_dim,
                     baseline_hidden, seed, progress) -> StaircaseResult:
    labels = list(specs)
    members = len(labels)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    critic_net = make_critic(critic, d, hidden, layers, embed_dim, members)
    baseline_net = MLP(d, 1, baseline_hidden, 1, members)
    functions = []
    for spec in specs.values():
        options = {k: v for k, v in spec.items() if k in ("alpha", "clip", "momentum")}
        functions.append(make_estimator(spec["estimator"], **options))
    uses_baseline = any(spec["estimator"] in NEEDS_BASELINE for spec in specs.values())
    parameters = list(critic_net.parameters()) + (list(baseline_net.parameters()) if uses_baseline else [])
    optimiser = torch.optim.Adam(parameters, lr=lr, foreach=True)
    true_mi = mi_staircase(levels, steps_per_level)
    estimates = np.full((members, len(true_mi)), np.nan)
    scales = np.full((members, len(true_mi)), np.nan)
    start = time.perf_counter()
    for step, mi in enumerate(true_mi):
        rho = rho_from_mi(float(mi), d)
        x, y = sample_correlated_gaussian(batch_size, d, rho, generator)
        raw = critic_net(x, y)                                             # (members, K, K)
        log_baseline = baseline_net(y).squeeze(-1) if uses_baseline else None   # (members, K)
        values, losses = [], []
        for m, (spec, function) in enumerate(zip(specs.values(), functions)):
            scores = tanh_clip(raw[m], spec.get("tclip"))
            needs = spec["estimator"] in NEEDS_BASELINE
            value = function(scores, log_baseline[m] if needs else None)
            loss = -value
            if spec.get("reg_weight"):
                loss = loss + spec["reg_weight"] * raw[m].pow(2).mean()
            values.append(value.detach())
            losses.append(loss)
        values = torch.stack(values)
        finite = torch.isfinite(values) & torch.isfinite(torch.stack([l.detach() for l in losses]))
        optimiser.zero_grad(set_to_none=True)
        total = sum(l for l, ok in zip(losses, finite.tolist()) if ok)
        if torch.is_tensor(total):
            total.backward()
            optimiser.step()
        estimates[:, step] = torch.where(finite, values, torch.nan).numpy()
        scales[:, step] = raw.detach().pow(2).mean((-2, -1)).sqrt().numpy()
        if progress and (step + 1) % steps_per_level == 0:
            print(f"MI {mi:4.1f} done: step {step + 1}/{len(true_mi)}, {time.perf_counter() - start:.0f} s", flush=True)
    return StaircaseResult({label: estimates[m] for m, label in enumerate(labels)}, true_mi, tuple(levels),
                           steps_per_level, batch_size, time.perf_counter() - start, d, specs,
                           {label: scales[m] for m, label in enumerate(labels)})


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` finite values (NaN/inf entries are skipped)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lagged_sums = np.concatenate([np.zeros(window), sums[:-window]]) if window < len(values) else np.zeros_like(sums)
    lagged_counts = np.concatenate([np.zeros(window), counts[:-window]]) if window < len(values) else np.zeros_like(counts)
    n = counts - lagged_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums - lagged_sums) / np.maximum(n, 1), np.nan)


def phase_statistics(result: StaircaseResult, tail: float = 0.5) -> list[dict]:
    """Bias and standard deviation of each estimator at each MI level, over the last `tail` of each phase.

    Rows: {estimator, mi, mean, bias, std, n, non_finite}; the statistics use the finite estimates.
    """
    rows = []
    n_tail = max(1, int(round(tail * result.steps_per_level)))
    for label, values in result.estimates.items():
        for index, mi in enumerate(result.levels):
            end = (index + 1) * result.steps_per_level
            window = values[end - n_tail:end]
            finite = window[np.isfinite(window)]
            mean = float(finite.mean()) if finite.size else float("nan")
            std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
            rows.append({"estimator": label, "mi": float(mi), "mean": mean, "bias": mean - float(mi), "std": std,
                         "n": int(finite.size), "non_finite": int(window.size - finite.size)})
    return rows


def per_level(rows: list[dict], label: str, key: str) -> list:
    """One estimator's `key` ('mean', 'bias', 'std', ...) at each MI level, from `phase_statistics` rows."""
    return [r[key] for r in rows if r["estimator"] == label]


def statistics_table(rows: list[dict], value: str = "bias") -> str:
    """A markdown table of `value` ('bias', 'std' or 'mean') with one row per estimator, one column per MI."""
    cell = (lambda r: f"{r['bias']:+.2f}") if value == "bias" else (lambda r: f"{r[value]:.2f}")
    return _per_estimator_table(rows, "MI {:g}", cell)


def bias_std_table(rows: list[dict]) -> str:
    """One markdown table with 'bias / std' in each cell (nats)."""
    return _per_estimator_table(rows, "MI {:g}: bias / std", lambda r: f"{r['bias']:+.2f} / {r['std']:.2f}")


def _per_estimator_table(rows: list[dict], column: str, cell) -> str:
    levels = sorted({r["mi"] for r in rows})
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    lookup = {(r["estimator"], r["mi"]): r for r in rows}
    return markdown_table(["estimator", *(column.format(mi) for mi in levels)],
                          ([label, *(cell(lookup[(label, mi)]) for mi in levels)] for label in labels),
                          "l" + "r" * len(levels))
