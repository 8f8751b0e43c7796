"""Variational lower bounds on mutual information, the critics they use, and a benchmark with known MI.

Every estimator works on a score matrix (the convention of the whole workbook)

    scores[..., i, j] = f(x_i, y_j)          (..., K, K), the diagonal holds the K joint samples,

so the off-diagonal entries are K (K - 1) samples from the product of marginals p(x) p(y). Leading
dimensions are batch dimensions: one call evaluates many batches (or many critics) at once. All values
are in nats. The bounds follow Poole et al. (2019), "On variational bounds of mutual information":

    TUBA     1 + E_p[f - a(y)] - E_{p(x)p(y)}[exp(f - a(y))]        (a = log-baseline, learned or given)
    NWJ      TUBA with a(y) = 1:  E_p[f] - e^{-1} E_q[e^f]             (optimal critic 1 + log p(y|x)/p(y))
    DV       E_p[f] - log E_q[e^f]                                     (biased on a mini-batch)
    MINE     DV, with the gradient of the denominator taken against a moving average of E_q[e^f]
    InfoNCE  log K + mean_i [f_ii - logsumexp_j f_ij]                  (never above log K)
    JS       the critic is trained with the f-GAN Jensen-Shannon objective, the value is NWJ(f + 1)
    alpha    the interpolated bound between InfoNCE (alpha = 1) and TUBA (alpha = 0)
    SMILE    DV with the partition term clipped to [e^-tau, e^tau], the critic trained with JS

Each estimator returns a tensor whose *value* is the MI estimate and whose *gradient* is the training
signal of that method (for JS, MINE and SMILE the two differ, so the value is stitched onto the training
objective with a detached offset). Train a critic by minimising ``-estimate``.

The benchmark is the correlated Gaussian: x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps, whose MI is
-(d/2) log(1 - rho^2) and whose optimal critic log p(y|x) / p(y) is known in closed form.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .objectives import tanh_clip

ESTIMATORS = ("infonce", "nwj", "tuba", "dv", "mine", "js", "alpha", "smile")
LABELS = {"infonce": "InfoNCE", "nwj": "NWJ", "tuba": "TUBA", "dv": "DV", "mine": "MINE", "js": "JS",
          "alpha": "alpha (0.01)", "smile": "SMILE (tau 5)"}
NEEDS_BASELINE = ("tuba", "alpha")
MI_LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)

# E[InfoNCE] of the true critic on the d = 20 benchmark with K = 64 (it has no closed form), from
# `infonce_true_critic_reference(mi, 20, 64, n_batches, seed=12345)` with 200,000 batches at MI 2, 4, 6 and
# 50,000 at MI 8, 10: standard errors 0.0005, 0.0004, 0.0003, 0.0003 and 0.0002 nats.
INFONCE_TRUE_CRITIC_D20_K64 = {2.0: 1.8120, 4.0: 3.0666, 6.0: 3.7371, 8.0: 4.0228, 10.0: 4.1218}


# ----------------------------------------------------------------------------------------------------
# Helpers on score matrices
# ----------------------------------------------------------------------------------------------------

def _diagonal(scores: torch.Tensor) -> torch.Tensor:
    return scores.diagonal(dim1=-2, dim2=-1)


def _eye(k: int, device) -> torch.Tensor:
    return torch.eye(k, dtype=torch.bool, device=device)


def logmeanexp_offdiag(scores: torch.Tensor) -> torch.Tensor:
    """log of the mean of exp(scores) over the K (K - 1) off-diagonal (product-of-marginals) pairs."""
    k = scores.shape[-1]
    masked = scores.masked_fill(_eye(k, scores.device), float("-inf"))
    return masked.flatten(-2).logsumexp(-1) - math.log(k * (k - 1))


def mean_offdiag(values: torch.Tensor) -> torch.Tensor:
    """Mean over the K (K - 1) off-diagonal entries."""
    k = values.shape[-1]
    return (values.sum((-2, -1)) - _diagonal(values).sum(-1)) / (k * (k - 1))


def _column_baseline(log_baseline, scores: torch.Tensor) -> torch.Tensor:
    """A log-baseline a(y_j) (a number or (..., K) over the y's) shaped to broadcast along the columns."""
    if not torch.is_tensor(log_baseline):
        return torch.as_tensor(float(log_baseline), dtype=scores.dtype, device=scores.device)
    return log_baseline.unsqueeze(-2)


def _value_with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor equal to `value` whose gradient is the gradient of `surrogate`."""
    return surrogate + (value - surrogate).detach()


# ----------------------------------------------------------------------------------------------------
# The estimators
# ----------------------------------------------------------------------------------------------------

def infonce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: log K + mean_i log softmax_j(f(x_i, y_j))_i. Each x_i picks its y_i among the K y's."""
    k = scores.shape[-1]
    return math.log(k) + (_diagonal(scores) - scores.logsumexp(-1)).mean(-1)


def tuba(scores: torch.Tensor, log_baseline=0.0) -> torch.Tensor:
    """TUBA: 1 + E_p[f - a(y)] - E_{p(x)p(y)}[exp(f - a(y))], with a(y) a log-baseline per y (or a number)."""
    shifted = scores - _column_baseline(log_baseline, scores)
    return 1.0 + _diagonal(shifted).mean(-1) - logmeanexp_offdiag(shifted).exp()


def nwj(scores: torch.Tensor) -> torch.Tensor:
    """NWJ (MINE-f, f-GAN KL): E_p[f] - e^{-1} E_q[e^f]; unbiased, tight at f = 1 + log p(y|x)/p(y)."""
    return tuba(scores, 1.0)


def dv(scores: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan: E_p[f] - log E_q[e^f] (the log of a mini-batch mean makes it biased)."""
    return _diagonal(scores).mean(-1) - logmeanexp_offdiag(scores)


def js_fgan(scores: torch.Tensor) -> torch.Tensor:
    """The f-GAN Jensen-Shannon objective E_p[-softplus(-f)] - E_q[softplus(f)] (a training signal, not
    an MI bound); its optimal critic is the log density ratio log p(y|x)/p(y)."""
    return -F.softplus(-_diagonal(scores)).mean(-1) - mean_offdiag(F.softplus(scores))


def js(scores: torch.Tensor) -> torch.Tensor:
    """Critic trained with the JS objective; value = NWJ(f + 1), the NWJ bound at the shifted critic, since
    the JS optimum f* = log ratio is exactly one below NWJ's optimum."""
    return _value_with_gradient_of(nwj(scores + 1.0), js_fgan(scores))


def smile(scores: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """SMILE (Song & Ermon 2020): E_p[f] - log E_q[clip(e^f, e^-tau, e^tau)], critic trained with JS.

    Clipping the density ratio bounds the variance of the partition term at the price of a bias.
    """
    value = _diagonal(scores).mean(-1) - logmeanexp_offdiag(scores.clamp(-clip, clip))
    return _value_with_gradient_of(value, js_fgan(scores))


def interpolated(scores: torch.Tensor, log_baseline=0.0, alpha: float = 0.01) -> torch.Tensor:
    """The interpolated bound I_alpha of Poole et al. (2019) between InfoNCE (alpha = 1) and TUBA (alpha = 0).

    With m(y; x_{1:M}) = mean_k exp f(x_k, y) and q(y) = exp a(y),

        I_alpha = 1 + E[log e^{f(x_1, y)} / (alpha m + (1 - alpha) q)]_{y ~ p(y|x_1)}
                    - E[e^{f(x_1, y)} / (alpha m + (1 - alpha) q)]_{y ~ p(y)},

    where the x_{2:M} are independent of y. In a batch of K pairs only the K - 1 x's other than x_j are
    independent of y_j, so both terms use M = K - 1: the marginal term for y_j averages over the K - 1 x's
    that are not x_j, and the joint term for y_i leaves out one other x_k, averaged over all k != i. This
    keeps the estimate an exact (unbiased) evaluation of the M = K - 1 bound; alpha = 1 gives InfoNCE with
    K - 1 candidates. Memory is O(K^3), fine for the batch sizes used here.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    k = scores.shape[-1]
    eye = _eye(k, scores.device)
    # leave_out[..., k, i] = log sum_{l != k} exp f(x_l, y_i): column sums with row k removed.
    columns = scores.unsqueeze(-3).expand(*scores.shape[:-2], k, k, k)          # [..., k, l, i] = f_li
    leave_out = columns.masked_fill(eye.unsqueeze(-1), float("-inf")).logsumexp(-2)
    log_m = leave_out - math.log(k - 1)                                          # [..., k, i]
    log_q = _column_baseline(log_baseline, scores).expand_as(scores)             # [..., *, i] = a(y_i)
    log_alpha = math.log(alpha) if alpha > 0 else float("-inf")
    log_rest = math.log1p(-alpha) if alpha < 1 else float("-inf")
    log_denominator = torch.logaddexp(log_alpha + log_m, log_rest + log_q)      # [..., k, i]
    # Joint term: y_i with x_i and K - 2 further x's (all but x_k), averaged over k != i.
    joint = mean_offdiag(_diagonal(scores).unsqueeze(-2) - log_denominator)
    # Marginal term: y_j against every x_i, i != j, normalised by the K - 1 x's other than x_j.
    marginal_denominator = _diagonal(log_denominator)                             # [..., j]: leave out x_j
    marginal = logmeanexp_offdiag(scores - marginal_denominator.unsqueeze(-2)).exp()
    return 1.0 + joint - marginal


class MINE:
    """MINE (Belghazi et al. 2018): the DV value, with the gradient of log E_q[e^f] replaced by
    grad E_q[e^f] / (moving average of E_q[e^f]) to reduce the bias of the mini-batch gradient.

    Stateful: one instance per critic. The moving average is kept in log space (it can be huge).
    """

    def __init__(self, momentum: float = 0.01):
        self.momentum = momentum
        self.log_average: torch.Tensor | None = None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        log_mean = logmeanexp_offdiag(scores)
        if torch.is_grad_enabled() and scores.requires_grad:
            current = log_mean.detach()
            if self.log_average is None:
                self.log_average = current
            else:
                self.log_average = torch.logaddexp(math.log1p(-self.momentum) + self.log_average,
                                                   math.log(self.momentum) + current)
        log_average = self.log_average if self.log_average is not None else log_mean.detach()
        joint = _diagonal(scores).mean(-1)
        surrogate = joint - (log_mean - log_average).exp()
        return _value_with_gradient_of(joint - log_mean, surrogate)


def make_estimator(name: str, **options) -> Callable[..., torch.Tensor]:
    """`estimator(scores, log_baseline=None)` for a name in ESTIMATORS (MINE gets fresh state)."""
    if name == "mine":
        mine = MINE(**options)
        return lambda scores, log_baseline=None: mine(scores)
    if name == "tuba":
        return lambda scores, log_baseline=None: tuba(scores, 0.0 if log_baseline is None else log_baseline)
    if name == "alpha":
        alpha = options.get("alpha", 0.01)
        return lambda scores, log_baseline=None: interpolated(
            scores, 0.0 if log_baseline is None else log_baseline, alpha)
    if name == "smile":
        clip = options.get("clip", 5.0)
        return lambda scores, log_baseline=None: smile(scores, clip)
    functions = {"infonce": infonce, "nwj": nwj, "dv": dv, "js": js}
    if name not in functions:
        raise ValueError(f"unknown estimator {name!r}; choose from {ESTIMATORS}")
    function = functions[name]
    return lambda scores, log_baseline=None: function(scores)


# ----------------------------------------------------------------------------------------------------
# The correlated-Gaussian benchmark
# ----------------------------------------------------------------------------------------------------

def mi_from_rho(rho: float, d: int) -> float:
    """MI (nats) of x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps: -(d/2) log(1 - rho^2)."""
    return -0.5 * d * math.log1p(-rho * rho)


def rho_from_mi(mi: float, d: int) -> float:
    """The correlation that gives `mi` nats over d independent coordinate pairs."""
    if mi < 0:
        raise ValueError(f"MI must be non-negative, got {mi}")
    return math.sqrt(-math.expm1(-2.0 * mi / d))


def sample_correlated_gaussian(batch_size: int, d: int, rho: float, generator: torch.Generator | None = None,
                               batch_shape: Sequence[int] = (), dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of shape (*batch_shape, batch_size, d) with y = rho x + sqrt(1 - rho^2) eps."""
    shape = (*batch_shape, batch_size, d)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    eps = torch.randn(shape, generator=generator, dtype=dtype)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * eps


def true_critic(x: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """The log density ratio log p(y_j | x_i) / p(y_j) for every pair: (..., K, d) x2 -> (..., K, K).

    It is the optimal critic of InfoNCE, DV and JS (and, plus one, of NWJ):
    -(d/2) log(1 - rho^2) - |y_j - rho x_i|^2 / (2 (1 - rho^2)) + |y_j|^2 / 2.
    """
    d = x.shape[-1]
    c = 1.0 - rho * rho
    xx = x.pow(2).sum(-1).unsqueeze(-1)                    # (..., K, 1)
    yy = y.pow(2).sum(-1).unsqueeze(-2)                    # (..., 1, K)
    xy = x @ y.transpose(-1, -2)                           # (..., K, K)
    squared = yy - 2 * rho * xy + rho * rho * xx
    return -0.5 * d * math.log(c) - squared / (2 * c) + 0.5 * yy


def mi_staircase(levels: Sequence[float], steps_per_level: int) -> np.ndarray:
    """The true MI at each training step: equal phases at each level."""
    return np.repeat(np.asarray(levels, dtype=float), steps_per_level)


def nwj_true_critic_std(mi: float, d: int, batch_size: int) -> float:
    """Exact standard deviation of the NWJ estimate at its optimal critic f = 1 + log r on one batch of K.

    NWJ = 1 + mean_i log r_ii - mean_{i != j} r_ij. Since E_y r(x, y) = E_x r(x, y) = 1, the only
    correlated pairs of terms are r_ij with r_ji; per coordinate Var_p(log r) = rho^2 and
    E_q[r^2] = 1 / (1 - rho^2), and E[r_ij r_ji] is a Gaussian integral (computed here exactly).
    Var = d rho^2 / K + (E_q[r^2] - 1 + Cov(r_ij, r_ji)) / (K (K - 1)).
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


class torch_threads:
    """Context manager: run torch ops with `n` threads (None: leave the setting alone), then restore it.

    The experiments here are made of many small tensor operations; one thread is about as fast as several
    on an idle machine and several times faster on a busy one, where OpenMP threads wait for each other
    at every operation.
    """

    def __init__(self, n: int | None = 1):
        self.n = n

    def __enter__(self):
        self.previous = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)
        return False


@torch.no_grad()
def true_critic_estimates(mi_levels: Sequence[float] = MI_LEVELS, d: int = 20, batch_size: int = 64,
                          n_batches: int = 500, seed: int = 0, estimators: Sequence[str] = ("infonce", "nwj"),
                          tclip: float | None = None, threads: int | None = 1) -> dict[str, np.ndarray]:
    """Each estimator at its optimal critic on `n_batches` fresh batches per MI level: name -> (levels, n_batches).

    The true critic is log r = log p(y|x)/p(y); NWJ gets 1 + log r, where it is tight. `tclip` passes the
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
# Critics
# ----------------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """A ReLU MLP; with `members` it is an ensemble of independent MLPs evaluated in one batched matmul.

    Input (N, in) or (members, N, in); output (N, out) or (members, N, out). A single MLP (members None)
    behaves like the usual nn.Sequential of nn.Linear and nn.ReLU.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, layers: int = 2, members: int | None = None):
        super().__init__()
        self.members = members
        dims = [in_dim] + [hidden] * layers + [out_dim]
        lead = () if members is None else (members,)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(*lead, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(*lead, 1, fan_out).uniform_(-bound, bound)
                                            if members else torch.empty(fan_out).uniform_(-bound, bound)))

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation of the first layer, (N, in) @ (members, in, h) broadcast to every member."""
        return x @ self.weights[0] + self.biases[0]

    def rest(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the first pre-activation."""
        for weight, bias in zip(self.weights[1:], self.biases[1:]):
            h = torch.relu(h) @ weight + bias
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first_layer(x))


class SeparableCritic(nn.Module):
    """f(x, y) = g(x)^T h(y): one pass of each network per sample, all K^2 scores from one matmul."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256, layers: int = 2, embed_dim: int = 32,
                 members: int | None = None):
        super().__init__()
        self.g = MLP(x_dim, embed_dim, hidden, layers, members)
        self.h = MLP(y_dim, embed_dim, hidden, layers, members)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.g(x) @ self.h(y).transpose(-1, -2)


class ConcatCritic(nn.Module):
    """f(x, y) = MLP([x, y]) on all K^2 pairs (more expressive, K times the cost of a separable critic).

    The first layer W [x; y] + b = W_x x + W_y y + b is computed per sample and summed per pair.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256, layers: int = 2, members: int | None = None):
        super().__init__()
        self.x_dim = x_dim
        self.net = MLP(x_dim + y_dim, 1, hidden, layers, members)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight, bias = self.net.weights[0], self.net.biases[0]
        hx = x @ weight[..., : self.x_dim, :] + bias             # (..., K, h)
        hy = y @ weight[..., self.x_dim:, :]                      # (..., K, h)
        pairs = hx.unsqueeze(-2) + hy.unsqueeze(-3)               # (..., K, K, h): [i, j] = x_i with y_j
        return self.net.rest(pairs.flatten(-3, -2)).squeeze(-1).unflatten(-1, pairs.shape[-3:-1])


class GaussianCritic(nn.Module):
    """The true critic of the correlated-Gaussian benchmark as a module (no parameters)."""

    def __init__(self, rho: float):
        super().__init__()
        self.rho = rho

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return true_critic(x, y, self.rho)


def make_critic(kind: str, d: int, hidden: int = 256, layers: int = 2, embed_dim: int = 32,
                members: int | None = None) -> nn.Module:
    if kind == "separable":
        return SeparableCritic(d, d, hidden, layers, embed_dim, members)
    if kind == "concat":
        return ConcatCritic(d, d, hidden, layers, members)
    raise ValueError(f"critic must be 'separable' or 'concat', got {kind!r}")


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


def statistics_table(rows: list[dict], value: str = "bias") -> str:
    """A markdown table of `value` ('bias', 'std' or 'mean') with one row per estimator, one column per MI."""
    levels = sorted({r["mi"] for r in rows})
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    lookup = {(r["estimator"], r["mi"]): r for r in rows}
    header = "| estimator | " + " | ".join(f"MI {mi:g}" for mi in levels) + " |"
    lines = [header, "|---|" + "---:|" * len(levels)]
    for label in labels:
        cells = []
        for mi in levels:
            r = lookup[(label, mi)]
            cells.append(f"{r[value]:+.2f}" if value == "bias" else f"{r[value]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bias_std_table(rows: list[dict]) -> str:
    """One markdown table with 'bias / std' in each cell (nats)."""
    levels = sorted({r["mi"] for r in rows})
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    lookup = {(r["estimator"], r["mi"]): r for r in rows}
    lines = ["| estimator | " + " | ".join(f"MI {mi:g}: bias / std" for mi in levels) + " |",
             "|---|" + "---:|" * len(levels)]
    for label in labels:
        cells = [f"{lookup[(label, mi)]['bias']:+.2f} / {lookup[(label, mi)]['std']:.2f}" for mi in levels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The bridge to AMDIM
# ----------------------------------------------------------------------------------------------------

def nce_candidates(batch_size: int, n_locations: int = 1) -> int:
    """Candidates each AMDIM positive is scored against: itself plus every location of the B - 1 other
    images, N = (B - 1) * L + 1 (the other L - 1 locations of its own image are not in the softmax)."""
    return (batch_size - 1) * n_locations + 1


def nce_mi_lower_bound(nce_loss_value, n_candidates: int):
    """MI >= log N - L_nce: the NCE term of the AMDIM loss read as InfoNCE with N candidates.

    Accepts a float or a tensor (e.g. `amdim_lib.objectives.nce_loss(src, trg)[0]`). The reading is exact
    when the N - 1 negatives are independent draws from the marginal; AMDIM's negatives come in groups of
    L correlated locations per image, so there it is the usual InfoNCE-style estimate, capped at log N.
    """
    return math.log(n_candidates) - nce_loss_value


def gaussian_critic_features(x: torch.Tensor, y: torch.Tensor, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The true critic written as AMDIM's scaled dot product: src (K, d+1), trg (K, d+1) with
    src_i . trg_j / sqrt(d+1) = log r(x_i, y_j) + (a term in x_i alone, which no softmax over j sees)."""
    d = x.shape[-1]
    c = 1.0 - rho * rho
    scale = math.sqrt(d + 1)
    src = torch.cat([x * (rho / c), torch.ones_like(x[..., :1])], -1) * scale
    trg = torch.cat([y, y.pow(2).sum(-1, keepdim=True) * (-rho * rho / (2 * c))], -1)
    return src, trg


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------

COLORS = {"InfoNCE": "tab:blue", "NWJ": "tab:orange", "TUBA": "tab:green", "DV": "tab:red", "MINE": "tab:purple",
          "JS": "tab:brown", "alpha (0.01)": "tab:pink", "SMILE (tau 5)": "tab:olive"}


def _color(label: str, index: int) -> str:
    return COLORS.get(label, f"C{index % 10}")


def plot_staircase(result: StaircaseResult, window: int | None = None, ncols: int = 4, ylim=(-2.0, 14.0),
                   labels: Sequence[str] | None = None):
    """One panel per estimator: raw estimates, their moving average, the true MI and the log K ceiling."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    labels = list(labels or result.estimates)
    window = window or max(5, result.steps_per_level // 10)
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.3 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    steps = np.arange(1, len(result.true_mi) + 1)
    for index, (ax, label) in enumerate(zip(axes.flat, labels)):
        values = result.estimates[label]
        color = _color(label, index)
        ax.plot(steps, np.clip(values, *ylim), color=color, alpha=0.25, lw=0.6, label="estimate")
        ax.plot(steps, moving_average(values, window), color=color, lw=2.0, label=f"moving average ({window})")
        ax.plot(steps, result.true_mi, color="black", lw=1.5, label="true MI")
        ax.axhline(result.log_k, color="gray", ls="--", lw=1.2, label=f"log K = {result.log_k:.2f}")
        ax.set_title(label, fontsize=12)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("training step", fontsize=11)
    for ax in axes[:, 0]:
        ax.set_ylabel("MI estimate (nats)", fontsize=11)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=10, frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"MI estimates while the true MI steps up (d = {result.d}, K = {result.batch_size})",
                 fontsize=14)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return fig


def plot_bias_variance(rows: list[dict], log_k: float | None = None):
    """Bias and standard deviation against the true MI, one line per estimator."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, (ax_bias, ax_std) = plt.subplots(1, 2, figsize=(12, 4.2))
    for index, label in enumerate(labels):
        mine = [r for r in rows if r["estimator"] == label]
        mis = [r["mi"] for r in mine]
        ax_bias.plot(mis, [r["bias"] for r in mine], "o-", color=_color(label, index), label=label)
        ax_std.plot(mis, [r["std"] for r in mine], "o-", color=_color(label, index), label=label)
    if log_k is not None:
        grid = np.linspace(min(r["mi"] for r in rows), max(r["mi"] for r in rows), 50)
        (limit,) = ax_bias.plot(grid, np.minimum(log_k - grid, 0), color="gray", ls="--", label="log K - MI")
        ax_bias.legend(handles=[limit], fontsize=9, loc="lower left", title="InfoNCE's ceiling", title_fontsize=9)
    ax_bias.axhline(0, color="black", lw=0.8)
    ax_bias.set(xlabel="true MI (nats)", ylabel="bias (nats)", title="Bias: mean estimate - true MI")
    ax_std.set(xlabel="true MI (nats)", ylabel="standard deviation (nats)", title="Variance: std of the estimate",
               yscale="log")
    for ax in (ax_bias, ax_std):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(12)
    ax_std.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_true_critic(samples: Mapping[str, np.ndarray], levels: Sequence[float], batch_size: int, d: int = 20):
    """Distributions of true-critic estimates per MI level (one box per level), with the references."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    names = list(samples)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        data = samples[name]
        ax.boxplot(list(data), positions=list(levels), widths=0.8, showfliers=False, manage_ticks=False)
        ax.plot(levels, data.mean(1), "o", color=_color(LABELS.get(name, name), 0), label="mean of the batches")
        ax.plot(levels, levels, color="black", lw=1.2, label="true MI")
        ax.axhline(math.log(batch_size), color="gray", ls="--", label=f"log K = {math.log(batch_size):.2f}")
        ax.set(xlabel="true MI (nats)", ylabel="estimate (nats)", xticks=list(levels),
               title=f"{LABELS.get(name, name)} with the true critic ({data.shape[1]} batches of {batch_size})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


def plot_batch_sizes(results: Mapping[int, StaircaseResult], label: str = "InfoNCE", window: int | None = None,
                     ylim=(-0.5, 11.0)):
    """Moving averages of one estimator trained at several batch sizes K, with each log K ceiling."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    fig, ax = plt.subplots(figsize=(9, 4.5))
    first = next(iter(results.values()))
    window = window or max(5, first.steps_per_level // 10)
    steps = np.arange(1, len(first.true_mi) + 1)
    ax.plot(steps, first.true_mi, color="black", lw=1.5, label="true MI")
    for index, (k, result) in enumerate(sorted(results.items())):
        color = f"C{index}"
        ax.plot(steps, np.clip(result.estimates[label], *ylim), color=color, alpha=0.15, lw=0.5)
        ax.plot(steps, moving_average(result.estimates[label], window), color=color, lw=2, label=f"K = {k}")
        ax.axhline(math.log(k), color=color, ls="--", lw=1.2, label=f"log {k} = {math.log(k):.2f}")
    ax.set(xlabel="training step", ylabel="InfoNCE estimate (nats)", ylim=ylim,
           title=f"{label} cannot report more than log K: larger batches raise the ceiling")
    ax.title.set_fontsize(12)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def plot_clipping(runs: Mapping, levels: Sequence[float], batch_size: int):
    """True-critic estimates (mean and std over batches) for several tanh-clipping levels c.

    `runs` maps c (None = no clipping) to the output of `true_critic_estimates(..., tclip=c)`.
    """
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    fig, (ax_nce, ax_nwj, ax_std) = plt.subplots(1, 3, figsize=(15, 4.2))
    levels = np.asarray(levels)
    for index, (clip, run) in enumerate(runs.items()):
        name = "no clipping" if clip is None else f"c = {clip:g}"
        color = f"C{index}"
        ax_nce.plot(levels, run["infonce"].mean(1), "o-", color=color, label=name)
        ax_nwj.plot(levels, run["nwj"].mean(1), "o-", color=color, label=name)
        ax_std.plot(levels, run["nwj"].std(1, ddof=1), "o-", color=color, label=f"NWJ, {name}")
        ax_std.plot(levels, run["infonce"].std(1, ddof=1), "s:", color=color, label=f"InfoNCE, {name}")
    for ax in (ax_nce, ax_nwj):
        ax.plot(levels, levels, color="black", lw=1.2, label="true MI")
        ax.set(xlabel="true MI (nats)", ylabel="mean estimate (nats)")
    ax_nce.axhline(math.log(batch_size), color="gray", ls="--", label=f"log K = {math.log(batch_size):.2f}")
    ax_nce.set_title("InfoNCE at the clipped true critic")
    ax_nwj.set_title("NWJ at the clipped true critic")
    ax_std.set(xlabel="true MI (nats)", ylabel="std over batches (nats)", yscale="log",
               title="Spread of the estimate over batches")
    for ax in (ax_nce, ax_nwj, ax_std):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(12)
    ax_nce.legend(fontsize=9)
    ax_nwj.legend(fontsize=9)
    ax_std.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_controls(result: StaircaseResult, pairs: Sequence[tuple[str, str]], clip: float = 20.0,
                  window: int | None = None):
    """Critics trained with and without AMDIM's controls: moving-average estimates and the raw score scale."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    window = window or max(5, result.steps_per_level // 10)
    steps = np.arange(1, len(result.true_mi) + 1)
    fig, (ax_est, ax_scale) = plt.subplots(1, 2, figsize=(14, 4.5))
    ax_est.plot(steps, result.true_mi, color="black", lw=1.5, label="true MI")
    ax_est.axhline(result.log_k, color="gray", ls="--", lw=1.2, label=f"log K = {result.log_k:.2f}")
    for index, (plain, controlled) in enumerate(pairs):
        color = f"C{index}"
        for label, style in ((plain, "-"), (controlled, "--")):
            ax_est.plot(steps, moving_average(result.estimates[label], window), style, color=color, lw=1.8, label=label)
            ax_scale.plot(steps, result.score_rms[label], style, color=color, lw=1.5, label=label)
    ax_scale.axhline(clip, color="gray", ls=":", label=f"tanh clip c = {clip:g}")
    ax_est.set(xlabel="training step", ylabel="MI estimate (nats), moving average", ylim=(-1, 11),
               title="Estimates with and without AMDIM's controls")
    ax_scale.set(xlabel="training step", ylabel="RMS of the raw scores", yscale="log",
                 title="Scale of the raw critic scores")
    for ax in (ax_est, ax_scale):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        ax.title.set_fontsize(12)
    fig.tight_layout()
    return fig
