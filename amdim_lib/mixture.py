"""Mixture-based representations: k global features per image, each free to explain part of it.

AMDIM's global feature f1 of view 1 must predict *every* 7x7 local feature f7^i of view 2. A mixture
relaxes that: a small network m_k turns f1 into k features f1^1..f1^k, and each location i only has
to be predicted by the component that explains it best. Components end up specialising (object
versus background, say), so colouring each location by its most probable component segments the
image, a side effect of the objective that needs no labels.

    f1^j  = f1 + MLP_j(f1)                                    (one ReLU hidden layer, residual to each)
    s_ij  = s_nce(f1^j, f7^i)                                 the NCE log-softmax score of location i
    q(j|i) = softmax_j(tau * s_ij)                            the assignment of location i
    J     = mean_i [ sum_j q(j|i) s_ij + alpha * H(q(.|i)) ]  maximised, averaged over the 7x7 locations

s_nce is the per-location NCE score of `amdim_lib.objectives.nce_loss`, kept apart for each component:
z_ij - log(exp z_ij + sum over every location l' of every *other* image of exp z_j,l'), with z the
tanh-clipped dot-product scores. With k = 1 and a zero MLP, J is exactly minus AMDIM's 1->7 loss, which
is why the mixture term *replaces* the 1->7 task (`mixture_amdim_loss`): 1->5, 5->5 and the logit
regulariser stay as they are.

Which gradients flow through q (all of them; q is not detached). Writing q_j = softmax(tau s)_j,

    dJ/ds_j = q_j [1 + tau (1 - alpha tau) (s_j - sum_j' q_j' s_j')]

- alpha = 1/tau: J = (1/tau) logsumexp_j(tau s_j), a soft maximum over components; each component
  gets its responsibility q_j of the gradient, exactly as if q were held fixed (an EM step).
- alpha < 1/tau (our default): components that already explain a location better than average get
  *more* than their responsibility, the others less or even a push away: winners take the location,
  which is what makes the components specialise into segments.
- alpha > 1/tau: the entropy bonus wins and pulls losing components towards the location: components
  are kept alive and similar (no segmentation, but no dead component either).

Defaults (chosen on Shapes at the demo scale of notebook 07, see its ablation): k = 4 components
(objects, their outline, backgrounds of two kinds), tau = 1 (q is then the posterior if the s_ij are
read as log-likelihoods, which they are: log-softmax scores), alpha = 0.1 < 1/tau: a small entropy
bonus that keeps assignments from freezing early without undoing the specialisation.

Assignment maps (`component_scores`, `assignments`, `upsample_maps`): q(j|i) at every local position
of an image, on the encoder's 7x7 grid, or on a finer grid from a dense sliding evaluation: the image
is shifted by sub-stride offsets (the 7x7 grid has a stride of 4 px at 32 px inputs), every shifted
copy is encoded, and the maps are interleaved into a (7s)x(7s) grid; the maps are then resampled at
each pixel from the receptive-field centres, so that they line up with the image.

Training is AMDIM's own loop (`amdim_lib.train.train` with `config.mixture_k` > 0, which also runs under
torchrun): the head sits in the model's forward, and the mixture's negatives span the global batch.
`train_mixture` runs it for a number of updates and returns a `MixtureModel`; an interrupted run resumes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import LATEST, latest_run_checkpoint, load_checkpoint
from .distributed import Context, gather_with_grad
from .encoder import Encoder, Features
from .objectives import amdim_loss, nce_scores, tanh_clip
from .presets import Config

DEFAULT_K = 4
DEFAULT_TAU = Config.mixture_tau      # 1.0 (the configuration's defaults are the ones argued for above)
DEFAULT_ALPHA = Config.mixture_alpha  # 0.1


# ----------------------------------------------------------------------------- mixture features

class MixtureHead(nn.Module):
    """m_k: f1 (B, D) -> k mixture features (B, k, D), f1^j = f1 + W2_j relu(W1 f1 + b1) + b2_j.

    The hidden layer is shared, the output layer has one D-block per component, and every component
    keeps a residual connection to f1 (so each starts near f1 and the whole AMDIM signal reaches it).
    The output layer starts small but random: with identical components q would be uniform, every
    component would get the same gradient, and they would never separate.
    """

    def __init__(self, n_rkhs: int, k: int = DEFAULT_K, hidden: int | None = None, init_scale: float = 0.5):
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
    """q(j|i) = softmax_j(tau * s_ij) along the component axis `dim`."""
    return torch.softmax(tau * scores, dim=dim)


def mixture_objective(scores: torch.Tensor, tau: float = DEFAULT_TAU, alpha: float = DEFAULT_ALPHA) -> dict:
    """The maximised quantity mean_i [sum_j q(j|i) s_ij + alpha H(q(.|i))] for scores (B, k, L).

    Gradients flow through q as well as through s (see the module docstring for what that does).
    Returns objective (scalar), its two terms `score` and `entropy` (means over locations) and q (B, k, L).
    """
    log_q = F.log_softmax(tau * scores, dim=1)
    q = log_q.exp()
    score = (q * scores).sum(1)
    entropy = -(q * log_q).sum(1)
    return {"objective": (score + alpha * entropy).mean(), "score": score.mean(), "entropy": entropy.mean(), "q": q}


def gradient_gain(scores: torch.Tensor, tau: float, alpha: float) -> torch.Tensor:
    """dJ/ds_j divided by q_j for one location's scores (..., k): 1 + tau (1 - alpha tau)(s_j - E_q s)."""
    q = torch.softmax(tau * scores, dim=-1)
    return 1 + tau * (1 - alpha * tau) * (scores - (q * scores).sum(-1, keepdim=True))


def mixture_loss(components: torch.Tensor, targets: torch.Tensor, tau: float = DEFAULT_TAU,
                 alpha: float = DEFAULT_ALPHA, tclip: float | None = 20.0, context: Context = Context()) -> dict:
    """Minus the mixture objective of one view's components (B, k, D) against the other view's local
    features targets (B, D, H, W). Negatives: every other image of the batch, gathered from every rank
    in data-parallel training (as in `amdim_loss`). Returns loss, logit_reg, score, entropy, q."""
    negatives = gather_with_grad(targets, context)
    own = torch.arange(len(targets), device=targets.device) + context.rank * len(targets)
    exclude = own[:, None] == torch.arange(len(negatives), device=targets.device)[None, :]
    scores, logit_reg = component_nce_scores(components, targets, negatives, tclip, exclude)
    out = mixture_objective(scores, tau, alpha)
    return {"loss": -out["objective"], "logit_reg": logit_reg, "score": out["score"], "entropy": out["entropy"],
            "q": out["q"]}


def mixture_amdim_loss(f1: Features, f2: Features, components: tuple[torch.Tensor, torch.Tensor], tau: float = DEFAULT_TAU,
                       alpha: float = DEFAULT_ALPHA, tclip: float | None = 20.0, reg_weight: float = 0.05,
                       generator: torch.Generator | None = None, tasks: Sequence[str] = ("1t5", "1t7", "5t5"),
                       with_q: bool = True, context: Context = Context()) -> dict:
    """AMDIM's loss with the 1->7 task computed through the mixture (both directions, averaged).

    components: (m_k(f1.r1), m_k(f2.r1)), the k components of each view (B, k, D).
    total = L_1t5 + L_5t5 + L_mix + reg_weight * (logit regularisers of the three pairs), i.e.
    `amdim_loss` with L_1t7 replaced by minus the mixture objective. `tasks` must include 1t7 (the
    mixture's task); the other two are kept when listed. Returns the terms of `amdim_loss` plus
    `mix`, `entropy` (mean H(q)) and, with `with_q`, the assignments `q` (B, k, 49) of direction 1 -> 2
    (detached; leave it out where every value must be a scalar). `context`: data-parallel training.
    """
    if "1t7" not in tasks:
        raise ValueError(f"the mixture term replaces the 1t7 task, which tasks={tuple(tasks)} leaves out")
    f1, f2 = (Features(*(t.float() for t in f)) for f in (f1, f2))  # softmaxes over many scores want float32
    c1, c2 = components
    others = [t for t in tasks if t != "1t7"]
    base = amdim_loss(f1, f2, tclip, reg_weight, others, generator=generator, context=context) if others else \
        {"loss": f1.r1.new_zeros(()), "reg": f1.r1.new_zeros(())}
    a = mixture_loss(c1.float(), f2.r7, tau, alpha, tclip, context)
    b = mixture_loss(c2.float(), f1.r7, tau, alpha, tclip, context)
    out = {t: base[t] for t in others}
    out["mix"] = (a["loss"] + b["loss"]) / 2
    out["entropy"] = (a["entropy"] + b["entropy"]) / 2
    out["reg"] = base["reg"] + reg_weight * (a["logit_reg"] + b["logit_reg"]) / 2
    out["loss"] = sum(out[t] for t in others) + out["mix"] + out["reg"]
    if with_q:
        out["q"] = a["q"].detach()
    return out


# ----------------------------------------------------------------------------- a trained mixture model

@dataclass
class MixtureModel:
    """An encoder with its mixture head, the configuration they were trained with and the training log
    (the `train` records of metrics.jsonl: losses, H(q) as `entropy`, each component's share as `usage`)."""

    encoder: Encoder
    head: MixtureHead
    config: Config
    steps: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0  # training time of this call (0 when loaded)

    @property
    def k(self) -> int:
        return self.head.k

    @property
    def tau(self) -> float:
        return self.config.mixture_tau

    @property
    def alpha(self) -> float:
        return self.config.mixture_alpha

    def eval(self) -> "MixtureModel":
        self.encoder.eval(), self.head.eval()
        return self

    @classmethod
    def from_run(cls, run_dir: str | Path, state: dict | None = None) -> "MixtureModel":
        """The model of a training run's folder (its newest checkpoint, or `state` already loaded from it)."""
        from .train import build_encoder, read_metrics

        run_dir = Path(run_dir)
        state = state if state is not None else load_checkpoint(run_dir / LATEST)
        config = Config.from_dict(state["config"])
        if not config.mixture_k or "mixture" not in state:
            raise ValueError(f"{run_dir} holds an AMDIM run without a mixture head (mixture_k={config.mixture_k}); "
                             "train one with amdim_lib.mixture.train_mixture or `train --set mixture_k=4`")
        encoder = build_encoder(config)
        encoder.load_state_dict(state["encoder"])
        head = MixtureHead(config.n_rkhs, config.mixture_k, config.mixture_hidden or None)
        head.load_state_dict(state["mixture"])
        history = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["step"] <= state["step"]]
        return cls(encoder, head, config, state["step"], history).eval()


def train_mixture(config: Config, run_dir: str | Path, steps: int | None = None, progress: bool = False) -> MixtureModel:
    """Train an encoder and its mixture head (`config.mixture_k` components) for `steps` updates in `run_dir`.

    AMDIM's training loop (`amdim_lib.train.train`) with the 1->7 task through the mixture: checkpoints,
    logs, online probes and resumption as for any run. `steps` budgets the run as the ablation sweep
    does (`train.budget_config`: constant learning rate after the warm-up); None: the configuration's
    epochs. A run stopped by a signal raises `train.TrainingInterrupted` after its checkpoint; calling
    again resumes.
    """
    from .train import budget_config

    return _train_until(*budget_config(config, steps), run_dir, progress)


def _train_until(run_config: Config, budget: int, run_dir: str | Path, progress: bool) -> MixtureModel:
    from .train import train_until

    if not run_config.mixture_k:
        raise ValueError("config.mixture_k is 0: set the number of mixture components, e.g. config.replace(mixture_k=4)")
    summary = train_until(run_config, run_dir, budget, progress)
    model = MixtureModel.from_run(run_dir)
    model.seconds = summary["seconds"]
    return model


def load_or_train(run_dir: str | Path, config: Config, steps: int | None = None,
                  progress: bool = False) -> tuple[MixtureModel, bool]:
    """The model of `run_dir` when it finished training with exactly this configuration and budget,
    else trained (or resumed) there. Returns (model, trained_now). A folder holding a run of another
    configuration is an error (choose another folder, or delete it to train again)."""
    from .train import budget_config

    run_config, budget = budget_config(config, steps)
    state = latest_run_checkpoint(run_dir)
    if state is not None:
        saved, wanted = Config.from_dict(state["config"]).outcome(), run_config.outcome()
        if saved != wanted:
            changed = ", ".join(f"{key} {saved[key]!r} -> {wanted[key]!r}" for key in wanted if saved[key] != wanted[key])
            raise ValueError(f"{run_dir} holds a run of a different configuration ({changed}); choose another "
                             "folder, or delete this one to train again (notebook 07: retrain=True)")
        if state["step"] == budget:
            return MixtureModel.from_run(run_dir, state), False
    return _train_until(run_config, budget, run_dir, progress), True


# ----------------------------------------------------------------------------- assignment maps

@functools.lru_cache(maxsize=None)
def _r7_field(image_size: int):
    from .viz import receptive_fields
    return receptive_fields(image_size)["r7"]


@torch.no_grad()
def dense_local_features(encoder: Encoder, x: torch.Tensor, shifts: int = 1) -> torch.Tensor:
    """Local features r7 on a (7*shifts) x (7*shifts) grid by dense sliding evaluation.

    The r7 grid has a stride (jump) of 4 px at 32 px inputs (8 at 64, 16 at 128). The image is shifted
    by every multiple of jump/shifts px in each direction (reflection-padded at the bottom/right),
    each shifted copy is encoded in one batch, and the 7x7 maps are interleaved: fine location
    g = r * shifts + t looks at the receptive field of location r moved by t * jump/shifts px (in each
    direction). shifts=1 is the plain r7 map.
    """
    if shifts == 1:
        return encoder(x).r7
    size = x.shape[-1]
    jump = _r7_field(size).jump
    if jump % shifts:
        raise ValueError(f"shifts={shifts} must divide the r7 stride of {jump} px at {size} px")
    step, batch = jump // shifts, len(x)
    padded = F.pad(x, (0, jump - step, 0, jump - step), mode="reflect")
    crops = [padded[..., a * step:a * step + size, b * step:b * step + size] for a in range(shifts) for b in range(shifts)]
    r7 = encoder(torch.cat(crops)).r7                                    # (s*s*B, D, 7, 7)
    dim, grid = r7.shape[1], r7.shape[-1]
    r7 = r7.view(shifts, shifts, batch, dim, grid, grid)                 # (a, b, B, D, r, c)
    return r7.permute(2, 3, 4, 0, 5, 1).reshape(batch, dim, grid * shifts, grid * shifts)


@torch.no_grad()
def negative_bank(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    """The r7 maps (M, D, 7, 7) of reference images, the negatives of `component_scores`."""
    return encoder(x).r7


@torch.no_grad()
def component_scores(model: MixtureModel, x: torch.Tensor, negatives: torch.Tensor | None = None,
                     shifts: int = 1) -> torch.Tensor:
    """NCE scores s (B, k, G, G) of each component of each image at each local position, G = 7*shifts.

    The components come from the unshifted image's global feature; the positions from
    `dense_local_features`. Negatives: a bank of other images' r7 maps (`negative_bank`), or with
    None the other images of the batch (as in training; needs B >= 2).
    """
    model.eval()
    if negatives is None and len(x) < 2:
        raise ValueError("one image has no in-batch negatives: pass a negative bank (mixture.negative_bank)")
    features = model.encoder(x)
    components = model.head(features.r1)
    dense = features.r7 if shifts == 1 else dense_local_features(model.encoder, x, shifts)
    if negatives is None:
        exclude = torch.eye(len(x), dtype=torch.bool)
        scores, _ = component_nce_scores(components, dense, features.r7, model.config.tclip, exclude)
    else:
        scores, _ = component_nce_scores(components, dense, negatives, model.config.tclip)
    return scores.view(len(x), model.k, *dense.shape[-2:])


def upsample_maps(maps: torch.Tensor, image_size: int, shifts: int = 1, mode: str = "bilinear") -> torch.Tensor:
    """Resample maps (B, C, G, G) on the r7 grid (G = 7*shifts) at every pixel of the image, (B, C, H, W).

    Grid value g sits at the centre of its receptive field, offset + size/2 + g * jump/shifts px
    (continuous coordinates, pixel p covering [p, p+1)); pixels between centres are interpolated,
    pixels beyond the outer centres take the border value.
    """
    maps = torch.as_tensor(maps, dtype=torch.float32)
    grid_side = maps.shape[-1]
    rf = _r7_field(image_size)
    first, step = rf.offset + rf.size / 2, rf.jump / shifts
    u = (torch.arange(image_size, dtype=torch.float32) + 0.5 - first) / step   # map coordinate of each pixel
    norm = 2 * u / max(grid_side - 1, 1) - 1
    gy, gx = torch.meshgrid(norm, norm, indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(len(maps), image_size, image_size, 2)
    return F.grid_sample(maps, grid, mode=mode, padding_mode="border", align_corners=True)


def pixel_assignments(scores: torch.Tensor, image_size: int, tau: float = DEFAULT_TAU, shifts: int = 1) -> torch.Tensor:
    """q(j|pixel) (B, k, H, W): the assignments of the grid, resampled at the pixels (still summing to 1)."""
    return upsample_maps(assignments(scores, tau), image_size, shifts)


# ----------------------------------------------------------------------------- segmentation quality

def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else 1.0


def best_match_iou(labels: np.ndarray, mask: np.ndarray, k: int) -> tuple[float, int]:
    """(IoU, component) of the component whose region (labels == j) overlaps `mask` best."""
    scores = [iou(labels == j, mask) for j in range(k)]
    best = int(np.argmax(scores))
    return scores[best], best


def label_maps(probabilities: torch.Tensor) -> np.ndarray:
    """Argmax over the component axis: (B, k, H, W) -> (B, H, W) int labels."""
    return probabilities.argmax(1).cpu().numpy()


def segmentation_ious(labels: np.ndarray, masks: np.ndarray, k: int) -> np.ndarray:
    """Best-matching component IoU of each image, (B,)."""
    return np.array([best_match_iou(lab, m, k)[0] for lab, m in zip(labels, masks)])


def kmeans_probabilities(features: torch.Tensor, k: int, seed: int = 0, per_image: bool = True) -> torch.Tensor:
    """k-means of local features (B, D, G, G) into k clusters, as one-hot maps (B, k, G, G).

    per_image: each image's locations get their own k centroids (the baseline of notebook 07); False:
    one set of k centroids for the locations of all the images (a clustering of the data set).
    """
    from sklearn.cluster import KMeans

    batch, dim, gh, gw = features.shape
    groups = [features[b:b + 1] for b in range(batch)] if per_image else [features]
    labels = []
    for group in groups:
        points = group.permute(0, 2, 3, 1).reshape(-1, dim).double().numpy()
        n_clusters = min(k, len(np.unique(points.round(6), axis=0)))
        labels.append(KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(points))
    labels = torch.as_tensor(np.concatenate(labels), dtype=torch.int64).view(batch, 1, gh, gw)
    return torch.zeros(batch, k, gh, gw).scatter_(1, labels, 1.0)


def kmeans_labels(encoder: Encoder, x: torch.Tensor, k: int, shifts: int = 1, seed: int = 0,
                  per_image: bool = True) -> np.ndarray:
    """Baseline segmentation: the images' local features (on the same grid as the mixture's maps)
    clustered into k groups with k-means (`kmeans_probabilities`), resampled at the pixels like the
    mixture's assignments."""
    encoder.eval()
    features = dense_local_features(encoder, x, shifts)
    return label_maps(upsample_maps(kmeans_probabilities(features, k, seed, per_image), x.shape[-1], shifts))


def centre_blob(image_size: int, radius: float) -> np.ndarray:
    """A centred disc of `radius` px (bool (H, W)): the trivial "the object is in the middle" guess."""
    c = (np.arange(image_size) + 0.5 - image_size / 2) ** 2
    return (c[:, None] + c[None, :]) <= radius ** 2


def fit_centre_blob(masks: np.ndarray, radii: Sequence[float] | None = None) -> float:
    """The disc radius with the best mean IoU over `masks` (fitted on training masks, then frozen)."""
    size = masks.shape[-1]
    radii = radii if radii is not None else np.linspace(0.05, 0.6, 23) * size
    scores = [np.mean([iou(centre_blob(size, r), m) for m in masks]) for r in radii]
    return float(radii[int(np.argmax(scores))])


def shapes_batch(split: str = "test", n: int = 64, image_size: int = 32, seed: int = 0, start: int = 0):
    """(images (n, 3, H, W) normalised like training, masks (n, H, W) bool, labels (n,)) from Shapes."""
    from .shapes import Shapes
    from .views import to_tensor

    data = Shapes(split, image_size, size=start + n, seed=seed)
    to_x = to_tensor()
    items = [data[i] for i in range(start, start + n)]
    return (torch.stack([to_x(img) for img, _, _ in items]), np.stack([m for _, _, m in items]),
            np.array([y for _, y, _ in items]))


def evaluate_segmentation(model: MixtureModel, x: torch.Tensor, masks: np.ndarray, negatives: torch.Tensor | None = None,
                          tau: float | None = None, shifts: int = 1, batch_size: int = 64) -> dict:
    """Best-matching-component IoU of the model's argmax maps with the object masks.

    Returns per_image IoUs, their mean, the pixel labels (B, H, W) and the best component of each image.
    """
    tau = model.tau if tau is None else tau
    labels = []
    for start in range(0, len(x), batch_size):
        scores = component_scores(model, x[start:start + batch_size], negatives, shifts)
        labels.append(label_maps(pixel_assignments(scores, x.shape[-1], tau, shifts)))
    labels = np.concatenate(labels)
    matches = [best_match_iou(lab, m, model.k) for lab, m in zip(labels, masks)]
    per_image = np.array([m[0] for m in matches])
    return {"per_image": per_image, "mean": float(per_image.mean()), "labels": labels,
            "best": np.array([m[1] for m in matches])}


def probe_r1(encoder: Encoder, config: Config, train_size: int, test_size: int, seed: int = 0) -> float:
    """Linear-probe test accuracy (`evaluate.linear_probe`) on frozen r1 features of `config`'s data."""
    from .datasets import build_dataset
    from .evaluate import extract_features, linear_probe
    from .views import Transformed, eval_transform, resolve_policy

    transform = eval_transform(resolve_policy(config.policy, config.image_size), config.image_size)
    feats = [extract_features(encoder, Transformed(build_dataset(config.dataset, split, config.image_size,
                                                                 config.data_dir, size, config.seed), transform))
             for split, size in (("train", train_size), ("test", test_size))]
    return linear_probe(*feats[0], *feats[1], seed=seed)["accuracy"]


def load_photographs(image_size: int, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                                               "immunohistochemistry")) -> dict:
    """scikit-image's sample photographs, centre-cropped to a square and resized to `image_size` (PIL)."""
    from PIL import Image
    from skimage import data

    out = {}
    for name in names:
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, -1)
        image = Image.fromarray(array[..., :3])
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        out[name] = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.LANCZOS)
    return out


def load_folder_images(root: str | Path, image_size: int, n: int = 6, seed: int = 0) -> dict:
    """Up to n images (PIL, resized to image_size) from an image folder such as <cifar>/test/<class>/*.jpg,
    one class after another; {} when the folder does not exist."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        return {}
    test = root / "test" if (root / "test").is_dir() else root
    classes = sorted(p for p in test.iterdir() if p.is_dir()) or [test]
    files = [sorted(f for f in c.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))[:50] for c in classes]
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(group)) for group in files]
    out = {}
    for number in range(n):  # one class after another, a different image of the class each round
        c, round_ = number % len(files), number // len(files)
        if round_ >= len(files[c]):
            continue
        path = files[c][orders[c][round_]]
        with Image.open(path) as img:
            out[f"{path.parent.name}/{path.stem}"] = img.convert("RGB").resize((image_size, image_size), Image.BICUBIC)
    return out


def images_to_tensor(images: Mapping[str, object] | Sequence, image_size: int) -> torch.Tensor:
    """PIL images (or (H, W, 3) arrays) -> normalised tensor (B, 3, S, S), resized when needed."""
    from PIL import Image

    from .views import FitSize, to_tensor

    fit, to_x = FitSize(image_size), to_tensor()
    items = images.values() if isinstance(images, Mapping) else images
    out = []
    for image in items:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            image = Image.fromarray(array if array.dtype == np.uint8 else (np.clip(array, 0, 1) * 255).astype(np.uint8))
        out.append(to_x(fit(image.convert("RGB"))))
    return torch.stack(out)


# ----------------------------------------------------------------------------- figures

def component_colours(k: int) -> np.ndarray:
    """k distinct RGB colours in [0, 1] (tab10, then tab20)."""
    from matplotlib import colormaps
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([cmap(j % cmap.N)[:3] for j in range(k)])


def overlay(image: np.ndarray, labels: np.ndarray, k: int, opacity: float = 0.5) -> np.ndarray:
    """The image (H, W, 3) in [0, 1] blended with one colour per component label (H, W)."""
    colours = component_colours(k)[labels]
    return np.clip((1 - opacity) * np.asarray(image, np.float32) + opacity * colours, 0, 1)


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_assignment_maps(images: Sequence[np.ndarray], rows: Mapping[str, np.ndarray], k: int, titles=None,
                         masks: Sequence[np.ndarray] | None = None, opacity: float = 0.65, title: str | None = None):
    """A grid: first row the images, then one row per entry of `rows` (name -> labels (B, H, W)) as
    colour overlays, and the ground-truth masks last when given (their outline is also drawn in white
    on every overlay)."""
    import matplotlib.pyplot as plt

    n = len(images)
    n_rows = 1 + len(rows) + (masks is not None)
    fig, axes = plt.subplots(n_rows, n, figsize=(1.7 * n + 1.2, 1.75 * n_rows + 0.4), squeeze=False)
    for c in range(n):
        axes[0, c].imshow(images[c], interpolation="nearest")
        if titles is not None:
            axes[0, c].set_title(str(titles[c]), fontsize=9)
        for r, (name, labels) in enumerate(rows.items(), 1):
            axes[r, c].imshow(overlay(images[c], labels[c], k, opacity), interpolation="nearest")
            if masks is not None:
                axes[r, c].contour(masks[c].astype(float), levels=[0.5], colors="white", linewidths=1.0)
        if masks is not None:
            axes[-1, c].imshow(masks[c], cmap="gray", interpolation="nearest")
    for r, name in enumerate(["image", *rows, *(["object mask"] if masks is not None else [])]):
        axes[r, 0].set_ylabel(name, fontsize=10)
    for ax in axes.flat:
        _bare(ax)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_training(history: Mapping[int, Sequence[Mapping]] | Sequence[Mapping], title: str = "Mixture training"):
    """Loss (solid: total, dashed: mixture term), entropy of q and component usage against steps;
    `history` is one run or {k: run}, one colour per run."""
    import matplotlib.pyplot as plt

    runs = history if isinstance(history, Mapping) else {"": history}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.7))
    for i, (k, records) in enumerate(runs.items()):
        steps = [r["step"] for r in records]
        colour, label = f"C{i}", (f"k = {k}" if k != "" else None)
        axes[0].plot(steps, [r["loss"] for r in records], color=colour, label=label)
        axes[0].plot(steps, [r["mix"] for r in records], color=colour, ls="--")
        axes[1].plot(steps, [r["entropy"] for r in records], color=colour, label=label)
        if isinstance(k, int):
            axes[1].axhline(math.log(k), color=colour, lw=0.8, ls=":")
        axes[2].plot(steps, np.array([r["usage"] for r in records]).max(1), color=colour, label=label)
    axes[0].set(xlabel="step", ylabel="loss", title="loss: total (solid), mixture term (dashed)")
    axes[1].set(xlabel="step", ylabel="H(q) (nats)", title="entropy of the assignments (dotted: log k)")
    axes[2].set(xlabel="step", ylabel="fraction of locations", title="share of the most used component")
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_iou_comparison(per_image: Mapping[str, np.ndarray], title: str = "Best-matching segment vs object mask"):
    """Mean IoU per method (bar, value under its name) with each image's IoU as a dot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.9 * len(per_image) + 1.2, 3.9))
    rng = np.random.default_rng(0)
    for i, (name, values) in enumerate(per_image.items()):
        ax.bar(i, np.mean(values), color=f"C{i}", alpha=0.45, width=0.65)
        ax.scatter(i + rng.uniform(-0.22, 0.22, len(values)), values, s=8, color=f"C{i}", alpha=0.8)
        ax.hlines(np.mean(values), i - 0.33, i + 0.33, color="k", lw=2)
    ax.set_xticks(range(len(per_image)), [f"{name}\nmean {np.mean(v):.3f}" for name, v in per_image.items()], fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("IoU with the object mask")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_k_ablation(results: Mapping[int, Mapping[str, float]], baselines: Mapping[str, Mapping[int, float]] | None = None):
    """Two panels over k: segmentation IoU (with baselines) and linear-probe accuracy."""
    import matplotlib.pyplot as plt

    ks = sorted(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(ks, [results[k]["iou"] for k in ks], "o-", label="trained mixture")
    for i, (name, values) in enumerate((baselines or {}).items(), 1):
        axes[0].plot(ks, [values[k] for k in ks], "s--", color=f"C{i}", label=name)
    axes[1].plot(ks, [100 * results[k]["linear_probe"] for k in ks], "o-", color="C3")
    axes[0].set(xlabel="components k", ylabel="mean best-match IoU", title="segmentation of Shapes")
    axes[1].set(xlabel="components k", ylabel="test accuracy (%)", title="linear probe on r1")
    for ax in axes:
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_assignment_sharpness(taus: Sequence[float] = (0.5, 1.0, 2.0, 5.0), alphas: Sequence[float] = (0.0, 0.1, 1.0, 2.0)):
    """Two components: q(1|i) against the score gap s1 - s2 for several tau, and the gradient gain
    dJ/ds_1 / q_1 against the gap for several alpha at tau = 1."""
    import matplotlib.pyplot as plt

    gap = torch.linspace(-6, 6, 241)
    scores = torch.stack([gap / 2, -gap / 2], -1)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6))
    for tau in taus:
        axes[0].plot(gap, assignments(scores, tau, dim=-1)[:, 0], label=f"tau = {tau:g}")
    for alpha in alphas:
        axes[1].plot(gap, gradient_gain(scores, 1.0, alpha)[:, 0], label=f"alpha = {alpha:g}")
    axes[1].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[0].set(xlabel="score gap s_1 - s_2", ylabel="q(1 | i)", title="assignment: softmax(tau s)")
    axes[1].set(xlabel="score gap s_1 - s_2", ylabel="(dJ/ds_1) / q(1 | i)",
                title="gradient gain of component 1 (tau = 1)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
