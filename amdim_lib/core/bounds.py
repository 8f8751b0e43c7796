"""Variational lower bounds on mutual information, the critics they use, and the Gaussian with known MI.

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
-(d/2) log(1 - rho^2) and whose optimal critic log p(y|x) / p(y) is known in closed form. The experiments
on it (the MI staircase, estimates at the true critic) are amdim_lib.analysis.mi_benchmark; their figures
amdim_lib.ui.bound_plots.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


ESTIMATORS = ("infonce", "nwj", "tuba", "dv", "mine", "js", "alpha", "smile")
LABELS = {"infonce": "InfoNCE", "nwj": "NWJ", "tuba": "TUBA", "dv": "DV", "mine": "MINE", "js": "JS",
          "alpha": "alpha (0.01)", "smile": "SMILE (tau 5)"}
NEEDS_BASELINE = ("tuba", "alpha")


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
# The bridge to AMDIM
# ----------------------------------------------------------------------------------------------------

def nce_candidates(batch_size: int, n_locations: int = 1) -> int:
    """Candidates each AMDIM positive is scored against: itself plus every location of the B - 1 other
    images, N = (B - 1) * L + 1 (the other L - 1 locations of its own image are not in the softmax)."""
    return (batch_size - 1) * n_locations + 1


def nce_mi_lower_bound(nce_loss_value, n_candidates: int):
    """MI >= log N - L_nce: the NCE term of the AMDIM loss read as InfoNCE with N candidates.

    Accepts a float or a tensor (e.g. `amdim_lib.core.objectives.nce_loss(src, trg)[0]`). The reading is exact
    when the N - 1 negatives are independent draws from the marginal; AMDIM's negatives come in groups of
    L correlated locations per image, so there it is the usual InfoNCE-style estimate, capped at log N.
    """
    return math.log(n_candidates) - nce_loss_value


def gaussian_critic_features(x: torch.Tensor, y: torch.Tensor, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The true critic written as AMDIM's scaled dot product: src (K, d+1), trg (K, d+1) with
    src_i . trg_j / sqrt(d+1) = log w(x_i, y_j) + (a term in x_i alone, which no softmax over j sees)."""
    d = x.shape[-1]
    c = 1.0 - rho * rho
    scale = math.sqrt(d + 1)
    src = torch.cat([x * (rho / c), torch.ones_like(x[..., :1])], -1) * scale
    trg = torch.cat([y, y.pow(2).sum(-1, keepdim=True) * (-rho * rho / (2 * c))], -1)
    return src, trg
