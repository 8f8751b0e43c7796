"""Evaluation of frozen features: linear and MLP probes, kNN, and the baselines they are compared to.

Protocol: features are extracted once, in eval mode (BN uses the statistics of training, never of
test data), with the deterministic test transform. A probe's regularisation is chosen on a held-out
part of the training features, the probe is refitted on all of them, and the test split is scored once.
From an encoder to accuracies there is one path: `feature_sets` (the labelled splits through the test
transform) scored by `evaluate_features`; `probe_encoder` takes it for one encoder on optionally
capped splits, `evaluate_encoder` for an encoder beside its baselines.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..run.build import build_encoder, build_splits, eval_dataset
from ..core.encoder import Encoder
from ..run.presets import Config
from .results import markdown_table

TRAINED = "AMDIM (trained)"  # the feature set of the encoder under evaluation


@torch.no_grad()
def extract_features(encoder: Encoder | None, dataset, batch_size: int = 256, device="cpu",
                     num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Global features r1 (N, n_rkhs) and labels (N,) of a data set of (tensor, label) items.

    `encoder=None` returns the flattened input pixels instead (the raw-pixel baseline).
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    was_training = encoder.training if encoder is not None else False
    if encoder is not None:
        encoder.eval().to(device)
    feats, labels = [], []
    for x, y in loader:
        h = x.flatten(1) if encoder is None else encoder(x.to(device)).r1.flatten(1).float().cpu()
        feats.append(h.numpy())
        labels.append(np.asarray(y))
    if encoder is not None:
        encoder.train(was_training)
    return np.concatenate(feats), np.concatenate(labels)


def _select_and_fit(make_model, grid, train_x, train_y, test_x, test_y, seed: int, held_out: float) -> dict:
    """Pick the grid value with the best held-out accuracy, refit on all training data, test once."""
    _check_held_out(train_y, held_out)
    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=held_out, random_state=seed,
                                                  stratify=train_y)
    with warnings.catch_warnings():  # iteration caps are deliberate: a probe is a measurement, not a fit to convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = {value: make_model(value).fit(fit_x, fit_y).score(val_x, val_y) for value in grid}
        best = max(scores, key=scores.get)
        model = make_model(best).fit(train_x, train_y)
    return {"accuracy": float(model.score(test_x, test_y)), "chosen": best, "validation": scores}


def _check_held_out(train_y, held_out: float) -> None:
    """A stratified held-out split needs every class twice in the training split, and room for each
    class on both sides of the split; say so in our words, not scikit-learn's."""
    classes, counts = np.unique(train_y, return_counts=True)
    n, k = len(train_y), len(classes)
    n_held = math.ceil(held_out * n)
    if counts.min() < 2 or n_held < k or n - n_held < k:
        raise ValueError(
            f"the probe's training split has {n} labelled images over {k} classes (the smallest class has "
            f"{counts.min()}); choosing the probe's regularisation on a held-out {held_out:.0%} needs every class "
            f"at least twice and at least {math.ceil(k / held_out)} images in all: probe on a larger training split")


def logistic_model(C: float, max_iter: int = 500):
    """The linear probe's model: multinomial logistic regression on standardised features."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, tol=1e-3))


def linear_probe(train_x, train_y, test_x, test_y, Cs=(0.01, 0.1, 1.0), seed: int = 0, held_out: float = 0.1) -> dict:
    """Multinomial logistic regression on standardised features; C chosen on a held-out split."""
    return _select_and_fit(logistic_model, Cs, train_x, train_y, test_x, test_y, seed, held_out)


def mlp_probe(train_x, train_y, test_x, test_y, alphas=(1e-4, 1e-2), hidden: int = 1024, seed: int = 0,
              held_out: float = 0.1) -> dict:
    """One-hidden-layer MLP (as the paper's MLP probe) on standardised features; L2 chosen on a held-out split."""
    def make(alpha):
        return make_pipeline(StandardScaler(), MLPClassifier((hidden,), alpha=alpha, max_iter=100,
                                                             random_state=seed))
    return _select_and_fit(make, alphas, train_x, train_y, test_x, test_y, seed, held_out)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 200, temperature: float = 0.07,
                 batch_size: int = 1024) -> float:
    """Weighted kNN on cosine similarity: each of the k nearest neighbours votes exp(sim / T)."""
    train = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    test = F.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.long)
    n_classes = int(labels.max()) + 1
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(test), batch_size):
        sims, idx = (test[start:start + batch_size] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), n_classes).scatter_add_(1, labels[idx], (sims / temperature).exp())
        correct += (votes.argmax(1) == torch.as_tensor(test_y[start:start + batch_size])).sum().item()
    return correct / len(test)


def evaluate_features(train_x, train_y, test_x, test_y, mlp: bool = False, seed: int = 0) -> dict:
    """Linear probe and kNN (and optionally the MLP probe) test accuracies of one feature set."""
    result = {"linear": linear_probe(train_x, train_y, test_x, test_y, seed=seed)["accuracy"],
              "knn": knn_accuracy(train_x, train_y, test_x, test_y)}
    if mlp:
        result["mlp"] = mlp_probe(train_x, train_y, test_x, test_y, seed=seed)["accuracy"]
    return result


def capped_splits(config: Config, train_limit: int | None, test_limit: int | None) -> Config:
    """`config` reading at most `train_limit` / `test_limit` images of each split (None: no cap)."""
    def capped(limit, size):
        return size if limit is None else (limit if size is None else min(limit, size))
    return config.replace(train_size=capped(train_limit, config.train_size),
                          test_size=capped(test_limit, config.test_size))


def feature_sets(encoder: Encoder, config: Config, baselines: bool = True, device="cpu") -> dict[str, tuple]:
    """Train/test features of a trained encoder and, with `baselines`, of the same architecture at
    random initialisation and of raw pixels, all with the test transform of the run's data set."""
    # STL-10: the probes' training split is the labelled train split (build_splits' default), never
    # train+unlabeled. Transfer (e.g. an ImageNet encoder probed on Places205): pass the encoder with a
    # config whose dataset/data_dir name the other data set (`python -m amdim_lib eval --dataset ...`).
    train_split, test_split = (eval_dataset(split, config) for split in build_splits(config))
    encoders = {TRAINED: encoder}
    if baselines:
        torch.manual_seed(config.seed)
        encoders["random init"] = build_encoder(config)
        encoders["raw pixels"] = None
    return {name: (*extract_features(enc, train_split, device=device),
                   *extract_features(enc, test_split, device=device))
            for name, enc in encoders.items()}


def probe_encoder(encoder: Encoder, config: Config, train_limit: int | None = None, test_limit: int | None = None,
                  mlp: bool = False, device="cpu") -> dict:
    """Test accuracies of the probes (`evaluate_features`: linear and kNN, with `mlp` the MLP too) on a
    frozen encoder's r1 over the labelled splits of `config`, at most `train_limit` / `test_limit`
    images of each (None: the whole split), seeded by `config.seed`; `n_train` / `n_test` say how many
    images the probes used."""
    features = feature_sets(encoder, capped_splits(config, train_limit, test_limit), baselines=False, device=device)
    train_x, train_y, test_x, test_y = features[TRAINED]
    return {**evaluate_features(train_x, train_y, test_x, test_y, mlp=mlp, seed=config.seed),
            "n_train": int(len(train_y)), "n_test": int(len(test_y))}


def evaluate_encoder(encoder: Encoder, config: Config, baselines: bool = True, mlp: bool = False, device="cpu") -> dict:
    """{feature set: {probe: test accuracy}} for the trained encoder and its baselines (`feature_sets`)."""
    return {name: evaluate_features(*feats, mlp=mlp, seed=config.seed)
            for name, feats in feature_sets(encoder, config, baselines, device).items()}


def probe_table(results: dict) -> str:
    """A markdown table of {feature set: {probe: accuracy}}."""
    probes = list(next(iter(results.values())))
    return markdown_table(["features", *(f"{p} acc. (%)" for p in probes)],
                          [[name, *(f"{100 * row[p]:.1f}" for p in probes)] for name, row in results.items()],
                          "l" + "r" * len(probes))


def per_class_subset(labels, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` examples drawn without replacement from each class (all of a smaller class)."""
    labels = np.asarray(labels)
    picks = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
             for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def label_counts(train_labels, wanted=(1, 4, 16, 64)) -> list[int | None]:
    """The wanted per-class counts below the smallest class size, then None for 'every label'."""
    smallest = int(np.bincount(np.asarray(train_labels)).min())
    return [n for n in wanted if n < smallest] + [None]


def label_efficiency(train_x, train_y, test_x, test_y, counts, C: float = 0.1, repeats: int = 3, seed: int = 0,
                     all_accuracy: float | None = None, max_iter: int = 500) -> list[dict]:
    """Linear-probe test accuracy when only `n` labelled examples per class are available.

    For each n in `counts` (None: the whole training split), draw `repeats` class-balanced subsets,
    fit standardised logistic regression with a fixed C (too few labels to hold any out for choosing
    it; pass the C the full linear probe chose) and score the test split. `all_accuracy` reuses an
    existing full-data result for n=None instead of refitting. Returns one dict per count: per_class,
    n_labels, mean, std, accuracies.
    """

    rng = np.random.default_rng(seed)
    points = []
    for n in counts:
        if n is None and all_accuracy is not None:
            accs = [float(all_accuracy)]
            n_labels = len(train_y)
        else:
            accs = []
            for _ in range(1 if n is None else repeats):
                idx = np.arange(len(train_y)) if n is None else per_class_subset(train_y, n, rng)
                model = logistic_model(C, max_iter)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(train_x[idx], train_y[idx])
                accs.append(float(model.score(test_x, test_y)))
            n_labels = len(idx)
        per_class = n if n is not None else round(len(train_y) / len(np.unique(train_y)))
        points.append({"per_class": per_class, "all": n is None, "n_labels": int(n_labels),
                       "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs})
    return points


def separates_from(curves: dict[str, list[dict]], trained: str, baselines: Sequence[str]) -> int | None:
    """The fewest labels per class from which on (every larger count included) `trained`'s label-efficiency
    curve stays above each baseline's by more than the two spreads over draws; None when it never does."""
    def apart(index: int) -> bool:
        ours = curves[trained][index]
        return all(ours["mean"] - curves[b][index]["mean"] > ours["std"] + curves[b][index]["std"] for b in baselines)

    counts = [point["per_class"] for point in curves[trained]]
    first = None
    for index in reversed(range(len(counts))):
        if not apart(index):
            break
        first = counts[index]
    return first


def embed_2d(features, labels, n_points: int = 1000, seed: int = 0, perplexity: float = 30.0, max_iter: int = 500):
    """t-SNE of a class-balanced random subset of at most `n_points` feature vectors.

    Features are standardised and reduced to 50 principal components first (the usual speed-up).
    Returns (xy (n, 2), labels (n,)).
    """

    features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
    rng = np.random.default_rng(seed)
    n_classes = len(np.unique(labels))
    idx = per_class_subset(labels, max(1, n_points // n_classes), rng) if len(labels) > n_points else np.arange(len(labels))
    x = StandardScaler().fit_transform(features[idx])
    x = np.nan_to_num(x)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=max_iter,
              random_state=seed).fit_transform(x)
    return xy, labels[idx]


def class_gathering(xy, labels, k: int = 10) -> dict[int, float]:
    """How much each class gathers in a 2-D map: the mean share of a point's `k` nearest neighbours in the
    plane that share its class (1 / number of classes when classes are spread evenly)."""
    from sklearn.neighbors import NearestNeighbors  # lazy: only this function needs it

    xy, labels = np.asarray(xy), np.asarray(labels)
    k = min(k, len(labels) - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    same = (labels[neighbours[:, 1:]] == labels[:, None]).mean(axis=1)  # column 0 is the point itself
    return {int(c): float(same[labels == c].mean()) for c in np.unique(labels)}
