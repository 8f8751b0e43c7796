"""Figures of the mixture and its segmentation: assignment overlays, training curves, IoU per
method, the k ablation, and how tau and alpha shape the assignments."""

from __future__ import annotations

import math
import textwrap
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps

from ..core.mixture import assignments, gradient_gain


def component_colours(k: int) -> np.ndarray:
    """k distinct RGB colours in [0, 1] (tab10, then tab20)."""
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([cmap(j % cmap.N)[:3] for j in range(k)])


def overlay(image: np.ndarray, labels: np.ndarray, k: int, opacity: float = 0.5) -> np.ndarray:
    """The image (H, W, 3) in [0, 1] blended with one colour per component label (H, W)."""
    colours = component_colours(k)[labels]
    return np.clip((1 - opacity) * np.asarray(image, np.float32) + opacity * colours, 0, 1)


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def _column_title(name, width: int = 13, fontsize: float = 9.0) -> tuple[str, float]:
    """A column's title wrapped to the column (about `width` characters a line), its font shrunk where one word is
    longer: neighbouring titles must not run into each other."""
    parts = str(name).replace("_", " ").split("/")  # a folder image's "class/file" breaks after its class
    text = "/\n".join(textwrap.fill(part, width, break_long_words=False) for part in parts)
    longest = max(len(line) for line in text.splitlines())
    return text, fontsize * min(1.0, width / longest)


def plot_assignment_maps(images: Sequence[np.ndarray], rows: Mapping[str, np.ndarray], k: int, titles=None,
                         masks: Sequence[np.ndarray] | None = None, opacity: float = 0.65, title: str | None = None):
    """A grid: first row the images, then one row per entry of `rows` (name -> labels (B, H, W)) as
    colour overlays, and the ground-truth masks last when given (their outline is also drawn in white
    on every overlay)."""

    n = len(images)
    n_rows = 1 + len(rows) + (masks is not None)
    fig, axes = plt.subplots(n_rows, n, figsize=(1.7 * n + 1.2, 1.75 * n_rows + 0.4), squeeze=False)
    for c in range(n):
        axes[0, c].imshow(images[c], interpolation="nearest")
        if titles is not None:
            text, size = _column_title(titles[c])
            axes[0, c].set_title(text, fontsize=size)
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


def plot_k_ablation(results: Mapping[int, Mapping[str, float]], baselines: Mapping[str, Mapping[int, float]] | None = None,
                    probe_baselines: Mapping[str, float] | None = None):
    """Two panels over k: segmentation IoU (with baselines) and linear-probe accuracy, the latter beside
    horizontal reference lines (`probe_baselines`, e.g. {"chance": 0.1}) on an axis that holds them all."""

    ks = sorted(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(ks, [results[k]["iou"] for k in ks], "o-", label="trained mixture")
    for i, (name, values) in enumerate((baselines or {}).items(), 1):
        axes[0].plot(ks, [values[k] for k in ks], "s--", color=f"C{i}", label=name)
    probes = [100 * results[k]["linear_probe"] for k in ks]
    axes[1].plot(ks, probes, "o-", color="C3", label="mixture models")
    for i, (name, value) in enumerate((probe_baselines or {}).items()):
        axes[1].axhline(100 * value, color="k", ls=("--", ":", "-.")[i % 3], lw=1, label=name)
    if probe_baselines:  # a few points above chance must read as a few points, not as a steep curve
        shown = probes + [100 * v for v in probe_baselines.values()]
        margin = max(2.0, 0.2 * (max(shown) - min(shown)))
        axes[1].set_ylim(max(0.0, min(shown) - margin), min(100.0, max(shown) + margin))
        axes[1].legend(fontsize=8)
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
