"""MI bounds against slow loops written from their definitions, and against the known MI of correlated Gaussians."""

import math

import pytest
import torch

from amdim_lib.core import bounds as B
from amdim_lib.core.objectives import nce_loss


def random_scores(k=6, seed=0, scale=2.0, batch=()):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*batch, k, k, generator=g, dtype=torch.float64)).requires_grad_()


# ---------------------------------------------------------------------------------------------------
# Slow references, one loop per definition (scores[i, j] = f(x_i, y_j), diagonal = joint samples)
# ---------------------------------------------------------------------------------------------------

def off_diagonal(k):
    return [(i, j) for i in range(k) for j in range(k) if i != j]


def slow_infonce(f):
    k = f.shape[0]
    terms = [f[i, i] - torch.log(sum(torch.exp(f[i, j]) for j in range(k)) / k) for i in range(k)]
    return torch.stack(terms).mean()


def slow_tuba(f, a):
    k = f.shape[0]
    joint = torch.stack([f[i, i] - a[i] for i in range(k)]).mean()
    marginal = torch.stack([torch.exp(f[i, j] - a[j]) for i, j in off_diagonal(k)]).mean()
    return 1 + joint - marginal


def slow_dv(f):
    k = f.shape[0]
    joint = torch.stack([f[i, i] for i in range(k)]).mean()
    return joint - torch.log(torch.stack([torch.exp(f[i, j]) for i, j in off_diagonal(k)]).mean())


def slow_js_fgan(f):
    k = f.shape[0]
    softplus = lambda v: torch.log1p(torch.exp(v))
    joint = torch.stack([-softplus(-f[i, i]) for i in range(k)]).mean()
    return joint - torch.stack([softplus(f[i, j]) for i, j in off_diagonal(k)]).mean()


def slow_interpolated(f, a, alpha):
    """I_alpha with M = K - 1 samples x_{1:M}, evaluated exactly as the docstring of `interpolated` says."""
    k = f.shape[0]

    def denominator(column, xs):
        m = sum(torch.exp(f[l, column]) for l in xs) / len(xs)
        return alpha * m + (1 - alpha) * torch.exp(a[column])

    joint = []
    for i in range(k):
        for left_out in range(k):
            if left_out != i:
                xs = [l for l in range(k) if l != left_out]          # contains x_i
                joint.append(f[i, i] - torch.log(denominator(i, xs)))
    marginal = []
    for i, j in off_diagonal(k):
        xs = [l for l in range(k) if l != j]                          # every x but y_j's partner
        marginal.append(torch.exp(f[i, j]) / denominator(j, xs))
    return 1 + torch.stack(joint).mean() - torch.stack(marginal).mean()


# ---------------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------------

def test_estimators_match_their_definitions():
    f = random_scores()
    a = torch.randn(6, dtype=torch.float64)
    assert torch.allclose(B.infonce(f), slow_infonce(f))
    assert torch.allclose(B.tuba(f, a), slow_tuba(f, a))
    assert torch.allclose(B.tuba(f, 0.3), slow_tuba(f, torch.full((6,), 0.3, dtype=torch.float64)))
    assert torch.allclose(B.nwj(f), slow_tuba(f, torch.ones(6, dtype=torch.float64)))
    nwj_form = f.diagonal().mean() - math.exp(-1) * torch.stack([f[i, j].exp() for i, j in off_diagonal(6)]).mean()
    assert torch.allclose(B.nwj(f), nwj_form)
    assert torch.allclose(B.dv(f), slow_dv(f))
    assert torch.allclose(B.js_fgan(f), slow_js_fgan(f))
    for alpha in (0.0, 0.01, 0.5, 1.0):
        assert torch.allclose(B.interpolated(f, a, alpha), slow_interpolated(f, a, alpha)), alpha


def test_estimators_accept_leading_batch_dimensions():
    f = random_scores(k=5, batch=(3, 2))
    a = torch.randn(3, 2, 5, dtype=torch.float64)
    for name in ("infonce", "nwj", "dv", "js", "smile"):
        batched = B.make_estimator(name)(f)
        assert batched.shape == (3, 2)
        assert torch.allclose(batched[1, 0], B.make_estimator(name)(f[1, 0]))
    batched = B.interpolated(f, a, 0.2)
    assert torch.allclose(batched[2, 1], B.interpolated(f[2, 1], a[2, 1], 0.2))
    assert torch.allclose(B.tuba(f, a)[0, 1], B.tuba(f[0, 1], a[0, 1]))


def test_interpolated_bound_ends_are_tuba_and_leave_one_out_infonce():
    f = random_scores(k=7, seed=3)
    a = torch.randn(7, dtype=torch.float64)
    assert torch.allclose(B.interpolated(f, a, 0.0), B.tuba(f, a))
    # alpha = 1: the marginal term is exactly one, and the joint term is InfoNCE over the x's (per y)
    # with K - 1 candidates, averaged over which other x is left out.
    k = 7
    terms = []
    for i in range(k):
        for out in range(k):
            if out != i:
                keep = [l for l in range(k) if l != out]
                terms.append(f[i, i] - torch.logsumexp(f[keep, i], 0) + math.log(k - 1))
    assert torch.allclose(B.interpolated(f, a, 1.0), torch.stack(terms).mean())


def test_infonce_never_exceeds_log_k_and_ignores_row_offsets():
    f = random_scores(k=8, scale=30.0, batch=(50,))
    assert (B.infonce(f) <= math.log(8) + 1e-12).all()
    perfect = torch.full((8, 8), -1e3, dtype=torch.float64).fill_diagonal_(1e3)
    assert B.infonce(perfect).item() == pytest.approx(math.log(8))
    offsets = torch.randn(50, 8, 1, dtype=torch.float64)
    assert torch.allclose(B.infonce(f + offsets), B.infonce(f))   # adding c(x_i) changes nothing
    assert torch.allclose(B.dv(f + 1.7), B.dv(f))                  # DV ignores a constant shift
    assert not torch.allclose(B.nwj(f + 1.7), B.nwj(f))            # NWJ does not


def test_js_and_smile_report_their_value_but_train_with_the_js_gradient():
    f = random_scores(seed=1)
    value = B.js(f)
    assert torch.allclose(value, B.nwj(f + 1.0))
    (grad,) = torch.autograd.grad(value, f)
    (expected,) = torch.autograd.grad(slow_js_fgan(f), f)
    assert torch.allclose(grad, expected)
    value = B.smile(f, clip=1.0)
    clipped = f.diagonal().mean() - torch.log(torch.stack([f[i, j].clamp(-1, 1).exp() for i, j in off_diagonal(6)]).mean())
    assert torch.allclose(value, clipped)
    (grad,) = torch.autograd.grad(value, f)
    assert torch.allclose(grad, expected)


def test_mine_reports_dv_and_divides_the_partition_gradient_by_a_moving_average():
    mine = B.MINE(momentum=0.1)
    f1, f2 = random_scores(seed=1), random_scores(seed=2)
    value1 = mine(f1)
    assert torch.allclose(value1, slow_dv(f1))
    mean1 = torch.stack([f1[i, j].exp() for i, j in off_diagonal(6)]).mean().detach()
    value2 = mine(f2)
    assert torch.allclose(value2, slow_dv(f2))
    partition2 = torch.stack([f2[i, j].exp() for i, j in off_diagonal(6)]).mean()
    average = 0.9 * mean1 + 0.1 * partition2.detach()
    (grad,) = torch.autograd.grad(value2, f2)
    (expected,) = torch.autograd.grad(f2.diagonal().mean() - partition2 / average, f2)
    assert torch.allclose(grad, expected)
    with torch.no_grad():  # evaluation leaves the moving average alone
        before = mine.log_average.clone()
        mine(f1)
    assert torch.equal(mine.log_average, before)


def test_make_estimator_rejects_unknown_names():
    with pytest.raises(ValueError):
        B.make_estimator("cpc")
    with pytest.raises(ValueError):
        B.interpolated(random_scores(), 0.0, alpha=1.5)


# ---------------------------------------------------------------------------------------------------
# The correlated-Gaussian benchmark
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mi", [0.1, 2.0, 10.0, 40.0])
def test_rho_and_mi_round_trip(mi):
    rho = B.rho_from_mi(mi, 20)
    assert 0 < rho < 1
    assert B.mi_from_rho(rho, 20) == pytest.approx(mi)
    assert B.mi_from_rho(0.0, 20) == 0.0


def test_samples_have_the_right_correlation_and_the_true_critic_is_the_log_density_ratio():
    g = torch.Generator().manual_seed(0)
    rho = 0.7
    x, y = B.sample_correlated_gaussian(20_000, 3, rho, g)
    cov = torch.cov(torch.cat([x, y], 1).T)
    assert torch.allclose(cov[:3, 3:], rho * torch.eye(3), atol=0.03)
    assert torch.allclose(cov[3:, 3:], torch.eye(3), atol=0.03)
    xs, ys = x[:5].double(), y[:7].double()
    conditional = torch.distributions.Normal(rho * xs.unsqueeze(1), math.sqrt(1 - rho ** 2))  # (5, 1, 3)
    marginal = torch.distributions.Normal(0.0, 1.0)
    expected = conditional.log_prob(ys.unsqueeze(0)).sum(-1) - marginal.log_prob(ys).sum(-1).unsqueeze(0)
    assert torch.allclose(B.true_critic(xs, ys, rho), expected, atol=1e-10)
    # E_p[log r] is the MI
    joint = torch.stack([B.true_critic(a, b, rho) for a, b in zip(x.double().split(100), y.double().split(100))])
    assert joint.diagonal(dim1=-2, dim2=-1).mean().item() == pytest.approx(B.mi_from_rho(rho, 3), abs=0.05)
    assert torch.equal(B.GaussianCritic(rho)(xs, ys), B.true_critic(xs, ys, rho))


# ---------------------------------------------------------------------------------------------------
# Critics
# ---------------------------------------------------------------------------------------------------

def test_ensemble_mlp_members_are_independent_mlps():
    torch.manual_seed(0)
    ensemble = B.MLP(5, 3, hidden=8, layers=2, members=4)
    single = B.MLP(5, 3, hidden=8, layers=2)
    x = torch.randn(10, 5)
    out = ensemble(x)
    assert out.shape == (4, 10, 3)
    with torch.no_grad():
        for w, b, ew, eb in zip(single.weights, single.biases, ensemble.weights, ensemble.biases):
            w.copy_(ew[2])
            b.copy_(eb[2, 0])
    assert torch.allclose(single(x), out[2], atol=1e-6)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                    torch.nn.Linear(8, 3))
    with torch.no_grad():
        for layer, w, b in zip(reference[::2], single.weights, single.biases):
            layer.weight.copy_(w.T)
            layer.bias.copy_(b)
    assert torch.allclose(reference(x), single(x), atol=1e-6)


@pytest.mark.parametrize("members", [None, 3])
def test_critics_score_every_pair(members):
    torch.manual_seed(0)
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    separable = B.SeparableCritic(5, 5, hidden=16, layers=2, embed_dim=6, members=members)
    concat = B.ConcatCritic(5, 5, hidden=16, layers=2, members=members)
    s, c = separable(x, y), concat(x, y)
    shape = (4, 4) if members is None else (members, 4, 4)
    assert s.shape == shape and c.shape == shape
    for i in range(4):
        for j in range(4):
            expected_s = (separable.g(x[i:i + 1]) * separable.h(y[j:j + 1])).sum(-1).squeeze(-1)
            expected_c = concat.net(torch.cat([x[i], y[j]]).unsqueeze(0)).squeeze(-1).squeeze(-1)
            assert torch.allclose(s[..., i, j], expected_s, atol=1e-5)
            assert torch.allclose(c[..., i, j], expected_c, atol=1e-5)
    with pytest.raises(ValueError):
        B.make_critic("bilinear", 5)


# ---------------------------------------------------------------------------------------------------
# The bridge to AMDIM
# ---------------------------------------------------------------------------------------------------

def test_amdim_candidates():
    assert B.nce_candidates(200, 49) == 199 * 49 + 1 == 9752
    assert B.nce_candidates(64) == 64
    assert B.nce_mi_lower_bound(1.0, 100) == pytest.approx(math.log(100) - 1.0)


def test_nce_loss_is_log_n_minus_infonce_for_the_true_critic():
    g = torch.Generator().manual_seed(0)
    rho = B.rho_from_mi(4.0, 20)
    x, y = B.sample_correlated_gaussian(64, 20, rho, g, dtype=torch.float64)
    src, trg = B.gaussian_critic_features(x, y, rho)
    loss, _ = nce_loss(src, trg.unsqueeze(-1), tclip=None)
    estimate = B.nce_mi_lower_bound(loss, B.nce_candidates(64, 1))
    assert torch.allclose(estimate, B.infonce(B.true_critic(x, y, rho)), atol=1e-9)


def test_nce_bound_over_locations_never_exceeds_log_n():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(6, 8, generator=g) * 10
    trg = src.unsqueeze(-1).expand(6, 8, 49) + 0.01 * torch.randn(6, 8, 49, generator=g)
    loss, _ = nce_loss(src, trg, tclip=None)
    n = B.nce_candidates(6, 49)
    assert 0 < B.nce_mi_lower_bound(loss.item(), n) <= math.log(n)
