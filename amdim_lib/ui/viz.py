"""Figures for the workbook, and the small computations they draw.

Two kinds of helpers live here:

- summaries computed from the library's own modules (the receptive fields themselves, and their
  check by gradient footprints, are amdim_lib.core.geometry): `encoder_summary` tabulates shapes
  and parameter counts (on the meta device, so the 200M-parameter models cost nothing);
- plotting functions that take arrays and return a matplotlib figure (the notebook saves and shows it).

Images are handled as (H, W, 3) float arrays in [0, 1]; `to_display` converts the library's normalised
(3, H, W) tensors.
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import numpy as np
import torch

from ..core.encoder import ConvResNxN, Encoder, count_parameters, local_width
from ..analysis.results import markdown_table
from ..core.geometry import conv_geometry, propagate, receptive_fields
from ..core.objectives import tanh_clip
from ..core.views import NORMALISATION

FEATURES = ("r1", "r5", "r7")
COLOURS = {"r1": "#1f77b4", "r5": "#2ca02c", "r7": "#ff7f0e"}  # one colour per feature, in every figure


# ----------------------------------------------------------------------------- images

def to_display(x, normalise: str = "default") -> np.ndarray:
    """A normalised (3, H, W) tensor, or an (H, W, 3) uint8/float array, as an (H, W, 3) float array in [0, 1]."""
    if isinstance(x, torch.Tensor):
        mean, std = (torch.tensor(v, dtype=x.dtype).view(3, 1, 1) for v in NORMALISATION[normalise])
        x = (x.detach().cpu() * std + mean).permute(1, 2, 0).numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x / 255.0
    return np.clip(x.astype(np.float32), 0.0, 1.0)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- receptive fields


def _rectangle(ax, box, colour, label=None, lw=2.0, ls="-"):
    from matplotlib.patches import Rectangle  # lazy: matplotlib loads only when a figure is drawn
    top, left, bottom, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                           edgecolor=colour, lw=lw, ls=ls, label=label))


def plot_receptive_fields(images: Mapping[int, np.ndarray], locations: Mapping[str, tuple[int, int]] | None = None,
                          footprints: Mapping[int, np.ndarray] | None = None, footprint_name: str = "r7"):
    """One column per encoder size: the image with the r1, r5 and r7 receptive fields of a location
    drawn on it; with `footprints` (size -> gradient map of `footprint_name` at its location) a second
    row shows the measured gradient with the computed box on top."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it
    from matplotlib.colors import LogNorm  # lazy: matplotlib loads only when a figure is drawn

    locations = dict({"r1": (0, 0), "r5": (3, 3), "r7": (1, 1)}, **(locations or {}))
    sizes = sorted(images)
    rows = 2 if footprints else 1
    fig, axes = plt.subplots(rows, len(sizes), figsize=(4.2 * len(sizes), 5.0 * rows), squeeze=False,
                             gridspec_kw=dict(hspace=0.32, wspace=0.08))
    for c, size in enumerate(sizes):
        fields = receptive_fields(size)
        ax = axes[0, c]
        ax.imshow(images[size], interpolation="nearest")
        for name in FEATURES:
            f, loc = fields[name], locations[name]
            _rectangle(ax, f.box(*loc), COLOURS[name], f"{name} at {loc}: {f.size} px, stride {f.jump}")
            if f.grid > 1:  # the centres of every location of the map (r5's are the inner 5x5 of r7's)
                centres = np.array([f.centre(i, j) for i in range(f.grid) for j in range(f.grid)])
                style = dict(s=7, color=COLOURS[name]) if name == "r7" else dict(s=40, facecolors="none",
                                                                                 edgecolors=COLOURS[name], lw=1.2)
                ax.scatter(centres[:, 1], centres[:, 0], **style)
        ax.set_title(f"{size} px encoder")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=9, frameon=False)
        _bare(ax)
        if footprints:
            ax = axes[1, c]
            grad = footprints[size]
            ax.imshow(np.where(grad > 0, grad, np.nan), cmap="magma", norm=LogNorm(), interpolation="nearest")
            ax.set_facecolor("#dddddd")
            f = fields[footprint_name]
            _rectangle(ax, f.box(*locations[footprint_name]), COLOURS[footprint_name], "computed box", ls="--")
            ax.set_xlim(-0.5, size - 0.5)
            ax.set_ylim(size - 0.5, -0.5)
            ax.set_title(f"|gradient| of {footprint_name}{locations[footprint_name]} (grey: zero)")
            ax.legend(loc="lower right", fontsize=9)
            _bare(ax)
    return fig


# ----------------------------------------------------------------------------- views

def image_grid(n_rows: int, n_cols: int, cell: float = 1.25, group: int = 1, title: str | None = None,
               col_titles: bool = True, left: float = 1.2, group_gap: float = 0.35):
    """A figure with an n_rows x n_cols grid of square image axes of side `cell` inches, placed exactly:
    small gaps inside groups of `group` columns (e.g. 2 for view pairs), wider gaps between groups,
    room on the left for row labels and on top for column titles and a title."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    inner, outer, vgap = 0.06 * cell, group_gap * cell, 0.1 * cell
    top = (0.3 if col_titles else 0.05) + (0.45 if title else 0.0)
    n_groups = -(-n_cols // group)
    width = left + n_cols * cell + (n_cols - n_groups) * inner + (n_groups - 1) * outer + 0.1
    height = top + n_rows * cell + (n_rows - 1) * vgap + 0.1
    fig = plt.figure(figsize=(width, height))
    axes = np.empty((n_rows, n_cols), dtype=object)
    for r in range(n_rows):
        for c in range(n_cols):
            x = left + c * cell + (c - c // group) * inner + (c // group) * outer
            y = height - top - (r + 1) * cell - r * vgap
            axes[r, c] = fig.add_axes((x / width, y / height, cell / width, cell / height))
            _bare(axes[r, c])
    if title:
        fig.suptitle(title, fontsize=13, y=1 - 0.1 / height, va="top")
    return fig, axes


def plot_view_pairs(rows: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], title: str | None = None,
                    cell: float = 1.25):
    """A grid of view pairs: one row per entry of `rows` (label -> list of (view1, view2) images);
    the two views of a pair sit close together, pairs further apart."""
    n_pairs = max(len(p) for p in rows.values())
    fig, axes = image_grid(len(rows), 2 * n_pairs, cell, group=2, title=title)
    for r, (label, pairs) in enumerate(rows.items()):
        for k in range(n_pairs):
            for v in range(2):
                ax = axes[r, 2 * k + v]
                if k < len(pairs):
                    ax.imshow(to_display(pairs[k][v]), interpolation="nearest")
                else:
                    ax.axis("off")
                if r == 0:
                    ax.set_title(f"pair {k + 1}: view {v + 1}", fontsize=9)
        axes[r, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    return fig


def plot_augmentation_rows(rows: Mapping[str, Sequence[np.ndarray]], title: str | None = None, cell: float = 1.3,
                           col_titles: Sequence[str] | None = None):
    """One row per label (label -> list of images), e.g. one augmentation per row; optional column titles."""
    n_cols = max(len(v) for v in rows.values())
    fig, axes = image_grid(len(rows), n_cols, cell, title=title, col_titles=bool(col_titles), left=1.5, group_gap=0.1)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            if c < len(images):
                axes[r, c].imshow(to_display(images[c]), interpolation="nearest")
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    for c, text in enumerate(col_titles or []):
        axes[0, c].set_title(text, fontsize=9)
    return fig


# ----------------------------------------------------------------------------- the objective

def encoder_summary(image_size: int, ndf: int, n_rkhs: int, n_depth: int, use_bn: bool = False) -> dict:
    """Feature shapes (C, H, W) and trainable parameters of an encoder, built on the meta device
    (no memory, no compute: fine for the 666M-parameter model)."""
    with torch.device("meta"):
        encoder = Encoder(image_size, ndf, n_rkhs, n_depth, use_bn)
        features = encoder(torch.empty(2, 3, image_size, image_size))
    return {"image_size": image_size, "ndf": ndf, "n_rkhs": n_rkhs, "n_depth": n_depth,
            "parameters": count_parameters(encoder), "local_width": local_width(image_size, ndf),
            **{name: tuple(getattr(features, name).shape[1:]) for name in FEATURES}}


def _layer_name(module) -> str:
    """What one stage of the encoder is, in the words of notebook 03."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if isinstance(module, torch.nn.BatchNorm2d):
        return "batch norm"
    if isinstance(module, torch.nn.Identity):
        return "batch norm, off (use_bn=False)"
    if not convs:
        return type(module).__name__
    first = convs[0]
    k, stride, pad = first.kernel_size[0], first.stride[0], first.padding[0]
    units = sum(1 for m in module.modules() if isinstance(m, ConvResNxN))
    kind = (f"{units} residual unit{'s' if units > 1 else ''}, the first {k}x{k} stride {stride}" if units
            else f"{k}x{k} conv stride {stride}" + (f", reflect-padded {pad}" if pad else ""))
    return kind


def encoder_layers(encoder: Encoder) -> str:
    """Markdown: every stage of `encoder` in forward order, with its output (channels x map side) and the
    side of input pixels one output location sees. Read from the module itself (forward hooks on the
    meta device and the conv geometry of `core.geometry`), so it always matches the code."""
    stages = [(f"to_r7.{i}", m) for i, m in enumerate(encoder.to_r7)] + [("to_r5", encoder.to_r5)]
    stages += [(f"to_r1.{i}", m) for i, m in enumerate(encoder.to_r1)]
    shapes = {}
    with torch.device("meta"):
        probe = Encoder(encoder.image_size, encoder.ndf, encoder.n_rkhs, encoder.n_depth, encoder.use_bn)
        named = dict(probe.named_modules())
        hooks = [named[name].register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
                 for name, _ in stages]
        probe(torch.empty(2, 3, encoder.image_size, encoder.image_size))
    for hook in hooks:
        hook.remove()
    rows, field, grid = [], (1, 1, 0), encoder.image_size
    taps = {f"to_r7.{len(encoder.to_r7) - 1}": "r7 (before its 1x1 head)", "to_r5": "r5 (before its 1x1 head)",
            f"to_r1.{len(encoder.to_r1) - 1}": "r1"}
    for name, module in stages:
        field, grid = propagate(conv_geometry(module), field, grid)
        channels, side, _ = shapes[name]
        rows.append([f"`{name}`", _layer_name(module), f"{channels} x {side}x{side}", field[0], taps.get(name, "")])
    return markdown_table(["stage", "what", "output", "sees (px)", "feature"], rows, "llrrl")


def score_image(scores: torch.Tensor) -> np.ndarray:
    """(B, B, L) scores as a (B, B*L) array: row i = source i, columns = target image j, then location l."""
    batch = scores.shape[0]
    return scores.detach().cpu().reshape(batch, -1).numpy()


def positive_negative_gap(scores: torch.Tensor) -> float:
    """Mean score of the positives (i, i, l) minus the mean score of the negatives (i, j != i, l)."""
    same = torch.eye(scores.shape[0], dtype=torch.bool).unsqueeze(-1).expand_as(scores)
    return float(scores[same].mean() - scores[~same].mean())


def plot_score_matrix(scores: torch.Tensor, ax=None, title: str = "NCE scores", cmap: str = "RdBu_r",
                      vmax: float | None = None):
    """Scores (B, B, L) as an image with the positive blocks (target image = source image) outlined."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it
    from matplotlib.patches import Rectangle  # lazy: matplotlib loads only when a figure is drawn

    batch, _, n_loc = scores.shape
    image = score_image(scores)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 2 + 0.012 * image.shape[1] * 8), 0.35 * batch + 1.6))
    vmax = vmax if vmax is not None else float(np.abs(image).max())
    im = ax.imshow(image, aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    for i in range(batch):
        ax.add_patch(Rectangle((i * n_loc - 0.5, i - 0.5), n_loc, 1, fill=False, edgecolor="black", lw=1.6))
    ax.set_xticks([(j + 0.5) * n_loc - 0.5 for j in range(batch)], [str(j) for j in range(batch)], fontsize=8)
    ax.set_yticks(range(batch), [str(i) for i in range(batch)], fontsize=8)
    for j in range(1, batch):
        ax.axvline(j * n_loc - 0.5, color="white", lw=0.5)
    ax.set_xlabel(f"target image j (each block: its {n_loc} locations)")
    ax.set_ylabel("source image i")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="score")
    return ax.figure


def _task_panel(ax_src, ax_trg, view1, view2, fields, task: str, src_loc=(2, 1), trg_loc=(3, 4)):
    """One prediction task: the source location in view 1, arrows to every target location in view 2."""
    from matplotlib.patches import ConnectionPatch  # lazy: matplotlib loads only when a figure is drawn

    src_name, trg_name = {"1t5": ("r1", "r5"), "1t7": ("r1", "r7"), "5t5": ("r5", "r5")}[task]
    src, trg = fields[src_name], fields[trg_name]
    src_loc = (0, 0) if src_name == "r1" else src_loc
    for ax, image in ((ax_src, view1), (ax_trg, view2)):
        ax.imshow(to_display(image), interpolation="nearest")
        _bare(ax)
    _rectangle(ax_src, src.box(*src_loc), COLOURS[src_name], lw=2.5)
    sy, sx = src.centre(*src_loc)
    ax_src.scatter([sx], [sy], s=40, color=COLOURS[src_name], edgecolor="white", zorder=3)
    _rectangle(ax_trg, trg.box(*trg_loc), COLOURS[trg_name], lw=2.0, ls="--")
    for i in range(trg.grid):
        for j in range(trg.grid):
            ty, tx = trg.centre(i, j)
            ax_trg.scatter([tx], [ty], s=14, color=COLOURS[trg_name], edgecolor="white", lw=0.5, zorder=3)
            ax_trg.add_artist(ConnectionPatch((tx, ty), (sx, sy), "data", "data", axesA=ax_trg, axesB=ax_src,
                                              color=COLOURS[trg_name], alpha=0.25, lw=0.8, arrowstyle="<-"))
    what = {"r1": "global r1 (whole image)", "r5": f"one r5 location {src_loc}"}[src_name]
    ax_src.set_title(f"view 1: source = {what}", fontsize=10)
    ax_trg.set_title(f"view 2: targets = all {trg.grid * trg.grid} {trg_name} locations", fontsize=10)
    ax_src.set_ylabel(task.replace("t", " -> "), fontsize=13, rotation=0, ha="right", va="center")


def plot_prediction_tasks(view1: np.ndarray, view2: np.ndarray, image_size: int, tasks: Sequence[str] = ("1t5", "1t7", "5t5")):
    """The three AMDIM prediction tasks on one pair of views: which source predicts which targets.
    Dashed: the receptive field of one target location."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    fields = receptive_fields(image_size)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(8.0, 3.4 * len(tasks)), squeeze=False)
    fig.subplots_adjust(left=0.12, right=0.98, wspace=0.55, hspace=0.25)
    for r, task in enumerate(tasks):
        _task_panel(axes[r, 0], axes[r, 1], view1, view2, fields, task)
    return fig


def plot_tanh_clip(clips: Sequence[float] = (5.0, 10.0, 20.0), u_max: float = 60.0):
    """c * tanh(u / c) against u for several c: linear near zero, saturating at +-c."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    u = torch.linspace(-u_max, u_max, 601)
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    ax.plot(u, u, color="grey", ls=":", label="no clipping (z = u)")
    for c in clips:
        ax.plot(u, tanh_clip(u, c), lw=2, label=f"c = {c:g}")
    ax.set_ylim(-1.25 * max(clips), 1.25 * max(clips))
    ax.set_xlabel("raw score u")
    ax.set_ylabel("clipped score z = c tanh(u / c)")
    ax.set_title("Soft clipping of the NCE scores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def plot_score_histograms(raw: torch.Tensor, clipped: Mapping[str, torch.Tensor], title: str = "Scores before and after clipping"):
    """Histogram of raw scores and of their clipped versions (label -> tensor), log counts."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    raw = raw.detach().flatten().cpu().numpy()
    lo, hi = float(raw.min()), float(raw.max())
    bins = np.linspace(lo, hi, 81)
    fig, ax = plt.subplots(figsize=(6.6, 4.0))
    ax.hist(raw, bins=bins, color="grey", alpha=0.6, label="raw u")
    for label, z in clipped.items():
        ax.hist(z.detach().flatten().cpu().numpy(), bins=bins, histtype="step", lw=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("count (log)")
    ax.set_title(title)
    ax.legend(fontsize=9)
    return fig


def plot_scale_sweep(scales: Sequence[float], losses: Mapping[str, Sequence[float]], regs: Sequence[float]):
    """Left: NCE loss against a scale factor of the scores, one curve per clipping setting;
    right: the logit regulariser mean(u^2) against the same factor."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, values in losses.items():
        left.plot(scales, values, marker="o", ms=3, lw=2, label=label)
    left.set_xscale("log")
    left.set_xlabel("scale factor on the raw scores u")
    left.set_ylabel("NCE loss (nats)")
    left.set_title("Loss of a batch as its scores are scaled up")
    left.grid(alpha=0.3)
    left.legend(fontsize=9)
    right.loglog(scales, regs, marker="o", ms=3, lw=2, color="black")
    right.set_xlabel("scale factor on the raw scores u")
    right.set_ylabel("logit regulariser mean(u^2)")
    right.set_title("The regulariser grows with the square of the scale")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def plot_loss_curves(records: Sequence[Mapping], keys: Sequence[str] = ("1t5", "1t7", "5t5"), title: str = "Training loss per task"):
    """Per-task loss against step from the 'train' records of a run's metrics.jsonl."""
    import matplotlib.pyplot as plt  # lazy: pyplot picks a backend when imported; only drawing needs it

    train = [r for r in records if r.get("kind", "train") == "train"]
    steps = [r["step"] for r in train]
    fig, ax = plt.subplots(figsize=(6.6, 4.0))
    for key in keys:
        ax.plot(steps, [r[key] for r in train], marker="o", ms=3, lw=1.5, label=key.replace("t", " -> "))
    ax.set_xlabel("update step")
    ax.set_ylabel("NCE loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def save_figure(fig, directory, name: str, dpi: int = 120) -> str:
    """Save `fig` as <directory>/<name>.png (tight bounding box) and return the path."""
    path = os.path.join(directory, f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (what the inspectors show in an ipywidgets.Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
