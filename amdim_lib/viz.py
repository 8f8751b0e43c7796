"""Figures for the workbook, and the small computations they draw.

Two kinds of helpers live here:

- geometry and summaries computed from the library's own modules: `receptive_fields` walks the
  encoder's layer stack, `gradient_footprint` checks it empirically, `encoder_summary` tabulates shapes
  and parameter counts (on the meta device, so the 200M-parameter models cost nothing);
- plotting functions that take arrays and return a matplotlib figure (the notebook saves and shows it).

Images are handled as (H, W, 3) float arrays in [0, 1]; `to_display` converts the library's normalised
(3, H, W) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .encoder import Encoder, count_parameters, local_width
from .views import NORMALISATION

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

@dataclass(frozen=True)
class ReceptiveField:
    """Where one feature map looks in the input image.

    Location (row, col) of the map depends on the input pixels
    [offset + row * jump, offset + row * jump + size - 1] (and likewise for columns), clipped to the image.

    Attributes:
        name: "r1", "r5" or "r7".
        image_size: side of the input image in pixels.
        size: side of the receptive field in input pixels (before clipping at the border).
        jump: input pixels between neighbouring locations (the product of the strides below the map).
        offset: input coordinate of the first pixel seen by location 0 (negative where padding is seen).
        grid: locations per side of the map (1, 5 or 7).
    """

    name: str
    image_size: int
    size: int
    jump: int
    offset: int
    grid: int

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels of location (row, col), inclusive, clipped to the image."""
        if not (0 <= row < self.grid and 0 <= col < self.grid):
            raise IndexError(f"location ({row}, {col}) is outside the {self.grid}x{self.grid} map {self.name}")
        last = self.image_size - 1
        top, left = self.offset + row * self.jump, self.offset + col * self.jump
        return (max(top, 0), max(left, 0), min(top + self.size - 1, last), min(left + self.size - 1, last))

    def centre(self, row: int, col: int) -> tuple[float, float]:
        """(y, x) centre of the (unclipped) receptive field of location (row, col), in pixel coordinates."""
        half = (self.size - 1) / 2
        return self.offset + row * self.jump + half, self.offset + col * self.jump + half

    @property
    def covers_image(self) -> bool:
        """True when one location sees every pixel of the image."""
        return self.box(0, 0) == (0, 0, self.image_size - 1, self.image_size - 1) and self.grid == 1


def conv_geometry(module: nn.Module) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of every Conv2d inside `module`, in the order they are applied.

    The encoder registers its layers in forward order, so walking the module tree gives the stack. The
    pooled shortcut of a residual unit (`F.avg_pool2d(w, s)`, not a module) has the same geometry as
    the unit's first conv, so the convs alone describe where every unit looks.
    """
    layers = []
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            (kh, kw), (sh, sw) = sub.kernel_size, sub.stride
            padding = sub.padding if isinstance(sub.padding, tuple) else None
            if kh != kw or sh != sw or padding is None or padding[0] != padding[1] or sub.dilation != (1, 1):
                raise ValueError(f"only square, undilated convs with explicit padding are supported, got {sub}")
            layers.append((kh, sh, padding[0]))
    return layers


def _stack(layers, field: tuple[int, int, int], grid: int) -> tuple[tuple[int, int, int], int]:
    """Push (size, jump, offset) and the grid side through a list of (kernel, stride, padding) layers."""
    size, jump, offset = field
    for kernel, stride, pad in layers:
        # Output i reads layer inputs i*s - p ... i*s - p + k - 1; input m sees pixels offset + m*jump ...
        size, offset, jump = size + (kernel - 1) * jump, offset - pad * jump, jump * stride
        grid = (grid + 2 * pad - kernel) // stride + 1
    return (size, jump, offset), grid


def receptive_fields(image_size: int, encoder: Encoder | None = None) -> dict[str, ReceptiveField]:
    """Receptive fields of r1, r5 and r7 of the AMDIM encoder for `image_size` px inputs.

    Computed from the encoder's layer stack (a tiny encoder is built when none is given: the geometry
    does not depend on the widths). r7 is read after `to_r7`, r5 after `to_r5`, r1 after `to_r1`; the
    local heads are 1x1 convs, which do not change where a location looks.
    """
    if encoder is None:
        encoder = Encoder(image_size, ndf=1, n_rkhs=local_width(image_size, 1), n_depth=1)
    if encoder.image_size != image_size:
        raise ValueError(f"the encoder takes {encoder.image_size} px inputs, not {image_size}")
    for head in (encoder.head5, encoder.head7):
        if any(layer[:2] != (1, 1) for layer in conv_geometry(head)):
            raise ValueError("the local heads are expected to be 1x1 convs")
    fields, state, grid = {}, (1, 1, 0), image_size
    for name, stage, expected in (("r7", encoder.to_r7, 7), ("r5", encoder.to_r5, 5), ("r1", encoder.to_r1, 1)):
        state, grid = _stack(conv_geometry(stage), state, grid)
        if grid != expected:
            raise ValueError(f"{name}: the layer stack gives a {grid}x{grid} map, the encoder a {expected}x{expected} one")
        fields[name] = ReceptiveField(name, image_size, *state, grid)
    return fields


def perturbed_encoder(image_size: int, seed: int = 0, scale: float = 0.3) -> Encoder:
    """A small float64 encoder in eval mode whose every weight is random, so that all branches are live
    (a fresh encoder's residual branches end in zero-initialised convs)."""
    generator = torch.Generator().manual_seed(seed)
    encoder = Encoder(image_size, ndf=4, n_rkhs=local_width(image_size, 4), n_depth=2).double().eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return encoder


def gradient_footprint(encoder: Encoder, name: str, row: int, col: int, seed: int = 0) -> np.ndarray:
    """|d feature(row, col) / d input| summed over channels, an (H, W) array, for a random input.

    The pixels with a nonzero gradient are the ones the location actually depends on: an empirical
    receptive field to compare with `receptive_fields`.
    """
    size = encoder.image_size
    dtype = next(encoder.parameters()).dtype
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype).requires_grad_(True)
    feature = getattr(encoder(x), name)
    feature[0, :, row, col].sum().backward()
    return x.grad[0].abs().sum(0).numpy()


def nonzero_box(grad: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) bounding box of the nonzero entries of a 2-d array."""
    rows, cols = np.nonzero(grad)
    if len(rows) == 0:
        raise ValueError("the array has no nonzero entry")
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def _rectangle(ax, box, colour, label=None, lw=2.0, ls="-"):
    from matplotlib.patches import Rectangle
    top, left, bottom, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                           edgecolor=colour, lw=lw, ls=ls, label=label))


def plot_receptive_fields(images: Mapping[int, np.ndarray], locations: Mapping[str, tuple[int, int]] | None = None,
                          footprints: Mapping[int, np.ndarray] | None = None, footprint_name: str = "r7"):
    """One column per encoder size: the image with the r1, r5 and r7 receptive fields of a location
    drawn on it; with `footprints` (size -> gradient map of `footprint_name` at its location) a second
    row shows the measured gradient with the computed box on top."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

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
    from matplotlib.patches import ConnectionPatch

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
    import matplotlib.pyplot as plt

    fields = receptive_fields(image_size)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(8.0, 3.4 * len(tasks)), squeeze=False)
    fig.subplots_adjust(left=0.12, right=0.98, wspace=0.55, hspace=0.25)
    for r, task in enumerate(tasks):
        _task_panel(axes[r, 0], axes[r, 1], view1, view2, fields, task)
    return fig


def plot_tanh_clip(clips: Sequence[float] = (5.0, 10.0, 20.0), u_max: float = 60.0):
    """c * tanh(u / c) against u for several c: linear near zero, saturating at +-c."""
    import matplotlib.pyplot as plt
    from .objectives import tanh_clip

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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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
    import os
    path = os.path.join(directory, f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
