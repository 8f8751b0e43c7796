"""Mixture-based representations: the head and the objective (amdim_lib.core.mixture)."""

import math

import pytest
import torch

from amdim_lib.core import mixture
from amdim_lib.core.encoder import Encoder, Features
from amdim_lib.core.mixture import MixtureHead, component_nce_scores, mixture_loss, mixture_objective
from amdim_lib.core.objectives import amdim_loss, nce_loss, tanh_clip


# ----------------------------------------------------------------------------- head and objective

def test_head_shapes_and_residual():
    head = MixtureHead(16, k=3, hidden=8)
    f1 = torch.randn(5, 16, 1, 1)
    out = head(f1)
    assert out.shape == (5, 3, 16)
    assert not torch.allclose(out[:, 0], out[:, 1])          # random output layer: components differ
    with torch.no_grad():
        head.fc2.weight.zero_()
    assert torch.allclose(head(f1), f1.flatten(1).unsqueeze(1).expand(5, 3, 16))  # residual: each is f1
    with pytest.raises(ValueError):
        MixtureHead(16, k=0)
    with pytest.raises(ValueError):
        head(torch.randn(5, 15))


def test_one_component_is_amdims_1t7_task():
    """k = 1 with a zero MLP: minus the mixture objective is nce_loss, whatever tau and alpha."""
    torch.manual_seed(0)
    src, trg = torch.randn(6, 32), torch.randn(6, 32, 7, 7) * 3
    head = MixtureHead(32, 1)
    with torch.no_grad():
        head.fc2.weight.zero_()
    for tau, alpha in ((1.0, 0.1), (5.0, 2.0)):
        out = mixture_loss(head(src), trg, tau, alpha, tclip=5.0)
        ref, reg = nce_loss(src, trg, tclip=5.0)
        assert torch.allclose(out["loss"], ref, atol=1e-5)
        assert torch.allclose(out["logit_reg"], reg, atol=1e-6)
        assert torch.allclose(out["q"], torch.ones_like(out["q"]))


def _slow_scores(components, targets, negatives, exclude, tclip):
    """Loop-by-loop s[b, j, i] = z_bji - log(exp z_bji + sum over negatives of exp z)."""
    batch, k, dim = components.shape
    trg = targets.reshape(batch, dim, -1)
    neg = negatives.reshape(len(negatives), dim, -1)
    out = torch.zeros(batch, k, trg.shape[2])
    for b in range(batch):
        for j in range(k):
            c = components[b, j]
            terms = [tanh_clip(c @ neg[m, :, l] / math.sqrt(dim), tclip)
                     for m in range(len(neg)) if not exclude[b, m] for l in range(neg.shape[2])]
            log_neg = torch.logsumexp(torch.stack(terms), 0)
            for i in range(trg.shape[2]):
                z = tanh_clip(c @ trg[b, :, i] / math.sqrt(dim), tclip)
                out[b, j, i] = z - torch.logaddexp(z, log_neg)
    return out


def test_component_scores_match_a_loop():
    torch.manual_seed(1)
    comps, trg = torch.randn(3, 2, 8) * 2, torch.randn(3, 8, 2, 2)
    fast, _ = component_nce_scores(comps, trg, tclip=3.0)  # in-batch negatives, own image excluded
    slow = _slow_scores(comps, trg, trg, torch.eye(3, dtype=torch.bool), 3.0)
    assert torch.allclose(fast, slow, atol=1e-5)
    bank = torch.randn(4, 8, 3)                            # a separate bank of negatives
    fast, _ = component_nce_scores(comps, trg, bank, tclip=3.0)
    assert torch.allclose(fast, _slow_scores(comps, trg, bank, torch.zeros(3, 4, dtype=torch.bool), 3.0), atol=1e-5)
    assert (fast <= 0).all()                                # log-softmax scores


def test_objective_terms_and_the_gradient_through_q():
    torch.manual_seed(2)
    s = (torch.randn(4, 3, 5) * 2).requires_grad_(True)
    tau, alpha = 1.5, 0.2
    out = mixture_objective(s, tau, alpha)
    q = torch.softmax(tau * s, 1)
    expected = ((q * s).sum(1) - alpha * (q * q.log()).sum(1)).mean()
    assert torch.allclose(out["objective"], expected)
    assert torch.allclose(out["q"].sum(1), torch.ones(4, 5))
    out["objective"].backward()
    # dJ/ds_j = q_j * gain_j / (number of locations averaged over)
    gain = mixture.gradient_gain(s.detach().transpose(1, 2), tau, alpha).transpose(1, 2)
    assert torch.allclose(s.grad, q.detach() * gain / (4 * 5), atol=1e-6)
    # alpha = 1/tau: the objective is a soft maximum, (1/tau) logsumexp(tau s)
    soft_max = mixture_objective(s.detach(), tau, 1 / tau)["objective"]
    assert torch.allclose(soft_max, (torch.logsumexp(tau * s.detach(), 1) / tau).mean(), atol=1e-6)


def test_mixture_amdim_loss_replaces_1t7_and_trains_everything():
    torch.manual_seed(3)
    encoder, head = Encoder(32, 4, 32, 1), MixtureHead(32, 2)
    both = encoder(torch.randn(8, 3, 32, 32))
    f1, f2 = Features(*(t[:4] for t in both)), Features(*(t[4:] for t in both))
    components = head(f1.r1), head(f2.r1)
    out = mixture.mixture_amdim_loss(f1, f2, components, generator=torch.Generator().manual_seed(0))
    assert set(out) >= {"1t5", "5t5", "mix", "reg", "entropy", "loss", "q"} and "1t7" not in out
    assert torch.allclose(out["loss"], out["1t5"] + out["5t5"] + out["mix"] + out["reg"])
    base = amdim_loss(f1, f2, tasks=("1t5", "5t5"), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["1t5"], base["1t5"]) and out["reg"] > base["reg"]
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert encoder.head7.shortcut.weight.grad.abs().sum() > 0  # the mixture term reaches the r7 head
    with pytest.raises(ValueError):
        mixture.mixture_amdim_loss(f1, f2, components, tasks=("1t5",))
    assert out["q"].shape == (4, 2, 49) and out["entropy"] <= math.log(2) + 1e-6
    scalars = mixture.mixture_amdim_loss(f1, f2, components, generator=torch.Generator().manual_seed(0), with_q=False)
    assert "q" not in scalars and all(v.dim() == 0 for v in scalars.values())  # what a training log can record
