"""Segmentation by mixture features: a trained mixture model, its assignment maps at every pixel,
and how well they cover the objects (best-matching IoU) beside the baselines (k-means, a centred disc).

Assignment maps: q(j|i) at every local position of an image, on the encoder's 7x7 grid, or on a finer
grid from a dense sliding evaluation: the image is shifted by sub-stride offsets (the 7x7 grid has a
stride of 4 px at 32 px inputs), every shifted copy is encoded, and the maps are interleaved into a
(7s)x(7s) grid; the maps are then resampled at each pixel from the receptive-field centres, so that
they line up with the image.

Training is AMDIM's own loop (`amdim_lib.run.train.train` with `config.mixture_k` > 0): `train_mixture`
runs it for a number of updates and returns a `MixtureModel`; an interrupted run resumes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..run.build import budget_config, build_encoder
from ..run.checkpoints import load_checkpoint
from ..run.runfolder import RunFolder, latest_run_checkpoint, read_metrics, reuse_finished_run
from ..core.encoder import Encoder
from ..core.geometry import receptive_fields
from ..core.mixture import MixtureHead, assignments, component_nce_scores
from ..run.presets import Config
from ..data.shapes import Shapes
from ..run.train import train_until
from ..core.views import to_tensor


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

        run_dir = Path(run_dir)
        state = state if state is not None else load_checkpoint(run_dir / RunFolder.CHECKPOINT)
        config = Config.from_dict(state["config"])
        if not config.mixture_k or "mixture" not in state:
            raise ValueError(f"{run_dir} holds an AMDIM run without a mixture head (mixture_k={config.mixture_k}); "
                             "train one with load_or_train(run_dir, config.replace(mixture_k=4)) or `train --set mixture_k=4`")
        encoder = build_encoder(config)
        encoder.load_state_dict(state["encoder"])
        head = MixtureHead(config.n_rkhs, config.mixture_k, config.mixture_hidden or None)
        head.load_state_dict(state["mixture"])
        history = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["step"] <= state["step"]]
        return cls(encoder, head, config, state["step"], history).eval()


def train_mixture(config: Config, run_dir: str | Path, steps: int | None = None, progress: bool = False) -> MixtureModel:
    """Train an encoder and its mixture head (`config.mixture_k` components) for `steps` updates in `run_dir`.

    AMDIM's training loop (`amdim_lib.run.train.train`) with the 1->7 task through the mixture: checkpoints,
    logs, online probes and resumption as for any run. `steps` budgets the run as the ablation sweep
    does (`run.build.budget_config`: constant learning rate after the warm-up); None: the configuration's
    epochs. A run stopped by a signal raises `train.TrainingInterrupted` after its checkpoint; calling
    again resumes.
    """

    return _train_until(*budget_config(config, steps), run_dir, progress)


def _train_until(run_config: Config, budget: int, run_dir: str | Path, progress: bool) -> MixtureModel:

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

    run_config, budget = budget_config(config, steps)
    state = latest_run_checkpoint(run_dir)
    if reuse_finished_run(run_dir, state and state["config"], run_config, finished=state is not None
                          and state["step"] == budget):
        return MixtureModel.from_run(run_dir, state), False
    return _train_until(run_config, budget, run_dir, progress), True


@functools.lru_cache(maxsize=None)
def _r7_field(image_size: int):
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
        raise ValueError("one image has no in-batch negatives: pass a negative bank (segmentation.negative_bank)")
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


def pixel_assignments(scores: torch.Tensor, image_size: int, tau: float = Config.mixture_tau, shifts: int = 1) -> torch.Tensor:
    """q(j|pixel) (B, k, H, W): the assignments of the grid, resampled at the pixels (still summing to 1)."""
    return upsample_maps(assignments(scores, tau), image_size, shifts)


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
    from sklearn.cluster import KMeans  # lazy: sklearn is slow to import and only the baseline needs it

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


def shapes_batch(split: str = "test", n: int = 64, image_size: int = 32, seed: int = 0, start: int = 0,
                 normalise: str = "default"):
    """(images (n, 3, H, W) normalised like training (or with the `normalise` statistics of another
    encoder's training), masks (n, H, W) bool, labels (n,)) from Shapes."""
    data = Shapes(split, image_size, size=start + n, seed=seed)
    to_x = to_tensor(normalise)
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

