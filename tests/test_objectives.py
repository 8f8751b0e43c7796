"""The batched NCE objective against a slow loop written straight from the definition."""

import math

import pytest
import torch

from amdim_lib.core.encoder import Features
from amdim_lib.core.objectives import amdim_loss, nce_loss, random_location, tanh_clip


def slow_nce_loss(src, trg, tclip=20.0):
    """Loops over every positive (i, l): -[z_iil - log(exp z_iil + sum_{j != i, l'} exp z_ijl')]."""
    B, D = src.shape
    trg = trg.reshape(B, D, -1)
    L = trg.shape[2]

    def z(i, j, l):
        u = torch.dot(src[i], trg[j, :, l]) / math.sqrt(D)
        return tclip * torch.tanh(u / tclip) if tclip else u

    terms, squares = [], []
    for i in range(B):
        negatives = [z(i, j, m) for j in range(B) if j != i for m in range(L)]
        for l in range(L):
            pos = z(i, i, l)
            terms.append(pos - torch.log(torch.exp(pos) + sum(torch.exp(n) for n in negatives)))
        for j in range(B):
            for m in range(L):
                squares.append((torch.dot(src[i], trg[j, :, m]) / math.sqrt(D)) ** 2)
    return -torch.stack(terms).mean(), torch.stack(squares).mean()


@pytest.mark.parametrize("tclip", [20.0, 2.0, None])
@pytest.mark.parametrize("spatial", [False, True])
def test_nce_loss_matches_the_slow_loop(tclip, spatial):
    g = torch.Generator().manual_seed(0)
    src = (3 * torch.randn(5, 16, generator=g, dtype=torch.float64)).requires_grad_()
    trg = (3 * torch.randn(5, 16, 2, 3, generator=g, dtype=torch.float64)).requires_grad_()
    target = trg if spatial else trg.flatten(2)
    fast, fast_reg = nce_loss(src, target, tclip)
    slow, slow_reg = slow_nce_loss(src, target, tclip)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0)
    assert torch.allclose(fast_reg, slow_reg, atol=1e-5, rtol=0)
    fast_grads = torch.autograd.grad(fast + fast_reg, (src, trg))
    slow_grads = torch.autograd.grad(slow + slow_reg, (src, trg))
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_nce_loss_gradcheck():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    trg = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, t: nce_loss(s, t, 5.0)[0], (src, trg))


def test_perfect_matching_gives_a_small_loss_and_noise_about_log_n():
    torch.manual_seed(0)
    B, D, L = 8, 32, 4
    src = torch.nn.functional.normalize(torch.randn(B, D), dim=1)
    trg = 100 * src.unsqueeze(-1).expand(B, D, L)  # every location agrees with its own source
    assert nce_loss(src, trg, tclip=None)[0] < 0.1
    noise = nce_loss(torch.randn(B, D) * 1e-3, torch.randn(B, D, L) * 1e-3)[0]
    assert abs(noise - math.log(1 + (B - 1) * L)) < 1e-2  # uniform scores: log(number of candidates)


def test_tanh_clip_bounds_scores():
    x = torch.linspace(-100, 100, 101)
    assert tanh_clip(x, 20).abs().max() < 20
    assert torch.allclose(tanh_clip(torch.tensor([0.1]), 20), torch.tensor([0.1]), atol=1e-5)
    assert torch.equal(tanh_clip(x, None), x)


def _features(B=4, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return Features(*(torch.randn(B, D, s, s, generator=g, dtype=dtype) for s in (1, 5, 7)))


def test_amdim_loss_combines_the_three_tasks_in_both_directions():
    f1, f2 = _features(seed=0), _features(seed=1)
    g1 = torch.Generator().manual_seed(5)
    out = amdim_loss(f1, f2, tclip=20.0, reg_weight=0.05, generator=g1)
    # Recompute by hand with the same 5->5 draws.
    g2 = torch.Generator().manual_seed(5)
    expected, reg = 0.0, 0.0
    for task in ("1t5", "1t7", "5t5"):
        parts = []
        for a, b in ((f1, f2), (f2, f1)):
            src = random_location(a.r5, g2) if task == "5t5" else a.r1.flatten(1)
            trg = {"1t5": b.r5, "1t7": b.r7, "5t5": b.r5}[task]
            parts.append(nce_loss(src, trg, 20.0))
        assert torch.allclose(out[task], (parts[0][0] + parts[1][0]) / 2)
        expected = expected + (parts[0][0] + parts[1][0]) / 2
        reg = reg + (parts[0][1] + parts[1][1]) / 2
    assert torch.allclose(out["reg"], 0.05 * reg)
    assert torch.allclose(out["loss"], expected + 0.05 * reg)


def test_5t5_locations_follow_the_callers_generator():
    f1, f2 = _features(seed=0), _features(seed=1)
    a = amdim_loss(f1, f2, tasks=("5t5",), generator=torch.Generator().manual_seed(3))["5t5"]
    b = amdim_loss(f1, f2, tasks=("5t5",), generator=torch.Generator().manual_seed(3))["5t5"]
    c = amdim_loss(f1, f2, tasks=("5t5",), generator=torch.Generator().manual_seed(4))["5t5"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    locations = random_location(torch.arange(2 * 25).float().view(2, 1, 5, 5).expand(2, 3, 5, 5).contiguous(),
                                torch.Generator().manual_seed(0))
    assert locations.shape == (2, 3) and torch.all(locations[:, 0] == locations[:, 2])


def test_task_subsets_and_half_precision_features():
    f1, f2 = _features(dtype=torch.bfloat16), _features(seed=1, dtype=torch.bfloat16)
    out = amdim_loss(f1, f2, tasks=("1t7",))
    assert set(out) == {"1t7", "reg", "loss"} and out["loss"].dtype == torch.float32
    with pytest.raises(ValueError, match="subset"):
        amdim_loss(f1, f2, tasks=("1t9",))
