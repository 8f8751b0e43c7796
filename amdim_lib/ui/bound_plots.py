"""Figures of the MI-bound benchmark (amdim_lib.analysis.mi_benchmark): the staircase, bias and spread,
the true critic's estimates, batch sizes, clipping and the controls."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..analysis.mi_benchmark import StaircaseResult, moving_average
from ..core.bounds import LABELS

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
    shown = [np.asarray(result.true_mi, dtype=float)]
    for index, (plain, controlled) in enumerate(pairs):
        color = f"C{index}"
        for label, style in ((plain, "-"), (controlled, "--")):
            shown.append(moving_average(result.estimates[label], window))
            ax_est.plot(steps, shown[-1], style, color=color, lw=1.8, label=label)
            ax_scale.plot(steps, result.score_rms[label], style, color=color, lw=1.5, label=label)
    ax_scale.axhline(clip, color="gray", ls=":", label=f"tanh clip c = {clip:g}")
    # Every curve whole, however far a critic strays: the axis follows the data, with the MI range as its floor.
    finite = np.concatenate([curve[np.isfinite(curve)] for curve in shown])
    low, high = min(-1.0, finite.min()), max(float(np.max(result.true_mi)) + 1, finite.max())
    ax_est.set(xlabel="training step", ylabel="MI estimate (nats), moving average",
               ylim=(low - 0.05 * (high - low), high + 0.05 * (high - low)),
               title="Estimates with and without AMDIM's controls")
    ax_scale.set(xlabel="training step", ylabel="RMS of the raw scores", yscale="log",
                 title="Scale of the raw critic scores")
    for ax in (ax_est, ax_scale):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        ax.title.set_fontsize(12)
    fig.tight_layout()
    return fig
