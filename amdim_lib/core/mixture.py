"""Mixture-based representations: k global features per image, each free to explain part of it.

AMDIM's global feature r1 of view 1 must predict *every* 7x7 local feature r7^l of view 2 (l: the
location). A mixture relaxes that: a small network m_k turns r1 into k features r1^(1)..r1^(k), and each
location l only has to be predicted by the component that explains it best. Components end up
specialising (object versus background, say), so colouring each location by its most probable
component segments the image, a side effect of the objective that needs no labels. (Symbols as in
notebook 00's table: m a component, l a location, i an image.)

    r1^(m) = r1 + MLP_m(r1)                                   (one ReLU hidden layer, residual to each)
    s_ml   = s_nce(r1^(m), r7^l)                              the NCE log-softmax score of location l
    q(m|l) = softmax_m(tau * s_ml)                            the assignment of location l
    J      = mean_l [ sum_m q(m|l) s_ml + alpha * H(q(.|l)) ] maximised, averaged over the 7x7 locations

s_nce is the per-location NCE score of `amdim_lib.core.objectives.nce_loss`, kept apart for each component:
z_ml - log(exp z_ml + sum over every location l' of every *other* image i' of exp z_m,i'l'), with z the
tanh-clipped dot-product scores. With k = 1 and a zero MLP, J is exactly minus AMDIM's 1->7 loss, which
is why the mixture term *replaces* the 1->7 task (`mixture_amdim_loss`): 1->5, 5->5 and the logit
regulariser stay as they are.

Which gradients flow through q (all of them; q is not detached). Writing q_m = softmax(tau s)_m at one location,

    dJ/ds_m = q_m [1 + tau (1 - alpha tau) (s_m - sum_m' q_m' s_m')]

- alpha = 1/tau: J = (1/tau) logsumexp_m(tau s_m), a soft maximum over components; each component
  gets its responsibility q_m of the gradient, exactly as if q were held fixed (an EM step).
- alpha < 1/tau (our default): components that already explain a location better than average get
  *more* than their responsibility, the others less or even a push away: winners take the location,
  which is what makes the components specialise into segments.
- alpha > 1/tau: the entropy bonus wins and pulls losing components towards the location: components
  are kept alive and similar (no segmentation, but no dead component either).

Defaults (chosen on Shapes at the demo scale of notebook 07, see its ablation): k = 4 components
(objects, their outline, backgrounds of two kinds), tau = 1 (q is then the posterior if the s_ml are
read as log-likelihoods, which they are: log-softmax scores), alpha = 0.1 < 1/tau: a small entropy
bonus that keeps assignments from freezing early without undoing the specialisation.

The trained model, its assignment maps and the segmentation they give live in `amdim_lib.analysis.segmentation`;
the mixture trains in AMDIM's own loop (`amdim_lib.run.train.train` with `config.mixture_k` > 0).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import Features
from .objectives import GlobalBatch, amdim_loss, nce_scores, tanh_clip

DEFAULT_TAU = 1.0      # the defaults argued for above (and the configuration's)
DEFAULT_ALPHA = 0.1


# ----------------------------------------------------------------------------- mixture features

class MixtureHead(nn.Module):
    """m_k: r1 (B, D) -> k mixture features (B, k, D), r1^(m) = r1 + W2_m relu(W1 r1 + b1) + b2_m.

    The hidden layer is shared, the output layer has one D-block per component, and every component
    keeps a residual connection to r1 (so each starts near r1 and the whole AMDIM signal reaches it).
    The output layer starts small but random: with identical components q would be uniform, every
    component would get the same gradient, and they would never separate.
    """

    def __init__(self, n_rkhs: int, k: int, hidden: int | None = None, init_scale: float = 0.5):
        super().__init__()
        if k < 1:
            raise ValueError(f"a mixture needs k >= 1 components, got k={k}")
        self.n_rkhs, self.k, self.hidden = n_rkhs, k, hidden or n_rkhs
        self.fc1 = nn.Linear(n_rkhs, self.hidden)
        self.fc2 = nn.Linear(self.hidden, k * n_rkhs)
        with torch.no_grad():
            self.fc2.weight.mul_(init_scale)
            self.fc2.bias.zero_()

    def forward(self, f1: torch.Tensor) -> torch.Tensor:
        f1 = f1.flatten(1)
        if f1.shape[1] != self.n_rkhs:
            raise ValueError(f"expected global features with {self.n_rkhs} channels, got {tuple(f1.shape)}")
        residual = self.fc2(F.relu(self.fc1(f1))).view(len(f1), self.k, self.n_rkhs)
        return f1.unsqueeze(1) + residual


# ----------------------------------------------------------------------------- the mixture objective

def component_nce_scores(components: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None,
                         tclip: float | None = 20.0, exclude: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """NCE log-softmax scores s (B, k, L) of every component against every location of its own image.

    components: (B, k, D) mixture features of the sources.
    targets: (B, D, L) or (B, D, H, W) local features of the same images (positives, location by location).
    negatives: (M, D, L') or (M, D, H', W') local features whose every location is a negative;
        None: the targets themselves, with each image's own map excluded (as in training).
    exclude: (B, M) bool, negatives[m] is not a negative of source b (default: the diagonal when
        negatives is None, nothing otherwise). Given, it says that the negatives hold the targets'
        own images (in-batch or gathered negatives).
    Returns (s, logit_reg): s[b, j, i] = z_bji - log(exp z_bji + sum_{m, l'} exp z_bj,ml'), z the
    clipped scores, and the mean squared raw score of every source-target pair once (the logit
    regulariser of `nce_loss`).
    Everything is batched: one matmul for the positives, one for the negatives.
    """
    batch, k, dim = components.shape
    if targets.shape[:2] != (batch, dim):
        raise ValueError(f"targets must be (B={batch}, D={dim}, ...), got {tuple(targets.shape)}")
    trg = targets.reshape(batch, dim, -1)
    src = components.reshape(batch * k, dim)
    if negatives is None:
        negatives = trg
        if exclude is None:
            exclude = torch.eye(batch, dtype=torch.bool, device=components.device)
    n_neg = negatives.shape[0]
    neg_raw = nce_scores(src, negatives).view(batch, k, n_neg, -1)           # (B, k, M, L')
    pos_raw = torch.einsum("bjd,bdl->bjl", components, trg) / math.sqrt(dim)  # (B, k, L)
    neg_z = tanh_clip(neg_raw, tclip)
    if exclude is not None:
        neg_z = neg_z.masked_fill(exclude.view(batch, 1, n_neg, 1), float("-inf"))
    neg = neg_z.flatten(2).logsumexp(2)                                     # (B, k)
    pos = tanh_clip(pos_raw, tclip)
    scores = pos - torch.logaddexp(pos, neg.unsqueeze(-1))
    if exclude is not None:  # the negatives hold the positives too: the squared scores nce_loss penalises
        logit_reg = neg_raw.pow(2).mean()
    else:
        logit_reg = torch.cat([pos_raw.flatten(), neg_raw.flatten()]).pow(2).mean()
    return scores, logit_reg


def assignments(scores: torch.Tensor, tau: float = DEFAULT_TAU, dim: int = 1) -> torch.Tensor:
    """q(m|l) = softmax_m(tau * s_ml) along the component axis `dim`."""
    return torch.softmax(tau * scores, dim=dim)


def mixture_objective(scores: torch.Tensor, tau: float = DEFAULT_TAU, alpha: float = DEFAULT_ALPHA) -> dict:
    """The maximised quantity mean_l [sum_m q(m|l) s_ml + alpha H(q(.|l))] for scores (B, k, L).

    Gradients flow through q as well as through s (see the module docstring for what that does).
    Returns objective (scalar), its two terms `score` and `entropy` (means over locations) and q (B, k, L).
    """
    log_q = F.log_softmax(tau * scores, dim=1)
    q = log_q.exp()
    score = (q * scores).sum(1)
    entropy = -(q * log_q).sum(1)
    return {"objective": (score + alpha * entropy).mean(), "score": score.mean(), "entropy": entropy.mean(), "q": q}


def gradient_gain(scores: torch.Tensor, tau: float, alpha: float) -> torch.Tensor:
    """dJ/ds_m divided by q_m for one location's scores (..., k): 1 + tau (1 - alpha tau)(s_m - E_q s)."""
    q = torch.softmax(tau * scores, dim=-1)
    return 1 + tau * (1 - alpha * tau) * (scores - (q * scores).sum(-1, keepdim=True))


def mixture_loss(components: torch.Tensor, targets: torch.Tensor, tau: float = DEFAULT_TAU,
                 alpha: float = DEFAULT_ALPHA, tclip: float | None = 20.0, batch: GlobalBatch = GlobalBatch()) -> dict:
    """Minus the mixture objective of one view's components (B, k, D) against the other view's local
    features targets (B, D, H, W). Negatives: every other image of the batch, gathered from every rank
    in data-parallel training (as in `amdim_loss`). Returns loss, logit_reg, score, entropy, q."""
    negatives = batch.gather(targets)
    own = torch.arange(len(targets), device=targets.device) + batch.rank * len(targets)
    exclude = own[:, None] == torch.arange(len(negatives), device=targets.device)[None, :]
    scores, logit_reg = component_nce_scores(components, targets, negatives, tclip, exclude)
    out = mixture_objective(scores, tau, alpha)
    return {"loss": -out["objective"], "logit_reg": logit_reg, "score": out["score"], "entropy": out["entropy"],
            "q": out["q"]}


def mixture_amdim_loss(f1: Features, f2: Features, components: tuple[torch.Tensor, torch.Tensor], tau: float = DEFAULT_TAU,
                       alpha: float = DEFAULT_ALPHA, tclip: float | None = 20.0, reg_weight: float = 0.05,
                       generator: torch.Generator | None = None, tasks: Sequence[str] = ("1t5", "1t7", "5t5"),
                       with_q: bool = True, batch: GlobalBatch = GlobalBatch()) -> dict:
    """AMDIM's loss with the 1->7 task computed through the mixture (both directions, averaged).

    components: (m_k(f1.r1), m_k(f2.r1)), the k components of each view (B, k, D).
    total = L_1t5 + L_5t5 + L_mix + reg_weight * (logit regularisers of the three pairs), i.e.
    `amdim_loss` with L_1t7 replaced by minus the mixture objective. `tasks` must include 1t7 (the
    mixture's task); the other two are kept when listed. Returns the terms of `amdim_loss` plus
    `mix`, `entropy` (mean H(q)) and, with `with_q`, the assignments `q` (B, k, 49) of direction 1 -> 2
    (detached; leave it out where every value must be a scalar). `batch`: data-parallel training.
    """
    if "1t7" not in tasks:
        raise ValueError(f"the mixture term replaces the 1t7 task, which tasks={tuple(tasks)} leaves out")
    f1, f2 = (Features(*(t.float() for t in f)) for f in (f1, f2))  # softmaxes over many scores want float32
    c1, c2 = components
    others = [t for t in tasks if t != "1t7"]
    base = amdim_loss(f1, f2, tclip, reg_weight, others, generator=generator, batch=batch) if others else \
        {"loss": f1.r1.new_zeros(()), "reg": f1.r1.new_zeros(())}
    a = mixture_loss(c1.float(), f2.r7, tau, alpha, tclip, batch)
    b = mixture_loss(c2.float(), f1.r7, tau, alpha, tclip, batch)
    out = {t: base[t] for t in others}
    out["mix"] = (a["loss"] + b["loss"]) / 2
    out["entropy"] = (a["entropy"] + b["entropy"]) / 2
    out["reg"] = base["reg"] + reg_weight * (a["logit_reg"] + b["logit_reg"]) / 2
    out["loss"] = sum(out[t] for t in others) + out["mix"] + out["reg"]
    if with_q:
        out["q"] = a["q"].detach()
    return out


# ----------------------------------------------------------------------------- a trained mixture model


# ----------------------------------------------------------------------------- assignment maps


# ----------------------------------------------------------------------------- segmentation quality




# ----------------------------------------------------------------------------- figures


