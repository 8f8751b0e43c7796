"""An inspector of mixture assignment maps: pure callbacks (values in, arrays or figures out) under a
thin ipywidgets layer.

- `image_scores(model, image, negatives, shifts)`: the NCE score of each component at each position
  of one image (the expensive part: one pass of the encoder per sub-stride shift);
- `inspect(scores, image_size, tau, shifts)`: the per-pixel assignments q(j|pixel), the argmax labels
  and each component's share of the image, for a temperature tau (cheap: no encoder);
- `inspector_figure(image, result, component, opacity)`: the image, the chosen component's
  probability map, the argmax map and every component's map, side by side;
- `decode_upload(value)`: the images of an ipywidgets FileUpload value.

`MixtureInspector` wires them to controls (image, upload, component, tau, opacity). It keeps its
current scores in `.scores`, the result of `inspect` in `.result` and the rendered PNG in
`.figure.value`, so tests can set control values and check the state without a browser.
"""

from __future__ import annotations

import io
from typing import Mapping

import ipywidgets
import numpy as np
import torch
from PIL import Image

from ..core import mixture, views
from ..analysis import segmentation
from . import segmentation_plots
from .viz import figure_png, to_display


def prepare_image(image, image_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """(display array (S, S, 3) in [0, 1], normalised tensor (1, 3, S, S)) of a PIL image or an array."""
    x = views.images_to_tensor([image], image_size)
    return to_display(x[0]), x


@torch.no_grad()
def image_scores(model: segmentation.MixtureModel, image, negatives: torch.Tensor, shifts: int = 4) -> torch.Tensor:
    """Scores s (k, G, G) of every component at every position of one image (G = 7 * shifts)."""
    _, x = prepare_image(image, model.config.image_size)
    return segmentation.component_scores(model, x, negatives, shifts)[0]


def inspect(scores: torch.Tensor, image_size: int, tau: float, shifts: int = 4) -> dict:
    """Assignments at temperature tau from scores (k, G, G): q (k, H, W) per pixel, the argmax labels
    (H, W), each component's share of the pixels (k,), and the mean entropy of q on the grid (nats)."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    grid_q = mixture.assignments(scores.unsqueeze(0), tau)
    q = segmentation.upsample_maps(grid_q, image_size, shifts)[0].numpy()
    labels = q.argmax(0)
    k = q.shape[0]
    entropy = float(-(grid_q * grid_q.clamp_min(1e-12).log()).sum(1).mean())
    return {"q": q, "labels": labels, "share": np.bincount(labels.ravel(), minlength=k) / labels.size,
            "entropy": entropy, "tau": tau}


def inspector_figure(image: np.ndarray, result: Mapping, component: int = 0, opacity: float = 0.5, title: str = ""):
    """Top row: the image, component `component`'s probability map over it, the argmax map over it.
    Bottom row: every component's probability map (the chosen one framed) and their colour scale.
    Built without pyplot (no global state, nothing shown by itself)."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a figure is drawn
    from matplotlib.patches import Rectangle  # lazy: matplotlib loads only when a figure is drawn

    q, labels = result["q"], result["labels"]
    k = q.shape[0]
    if not 0 <= component < k:
        raise ValueError(f"component must be in 0..{k - 1}, got {component}")
    colours = segmentation_plots.component_colours(k)
    fig = Figure(figsize=(max(7.5, 1.45 * k + 1.2), 5.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.5, 1])
    axes = top.subplots(1, 3)
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("image", fontsize=10)
    axes[1].imshow(image, interpolation="nearest")
    axes[1].imshow(q[component], cmap="magma", vmin=0, vmax=1, alpha=opacity, interpolation="bilinear")
    axes[1].set_title(f"q(component {component} | pixel)", fontsize=10, color=colours[component])
    axes[2].imshow(segmentation_plots.overlay(image, labels, k, opacity), interpolation="nearest")
    axes[2].set_title("argmax component", fontsize=10)
    small = bottom.subplots(1, k, squeeze=False)[0]
    for j, ax in enumerate(small):
        heat = ax.imshow(q[j], cmap="magma", vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(f"{j}: {100 * result['share'][j]:.0f}% of pixels", fontsize=9, color=colours[j])
        if j == component:
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=4, edgecolor=colours[j]))
    bottom.colorbar(heat, ax=list(small), shrink=0.8, label="q(j | pixel)")
    for ax in [*axes, *small]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"mixture assignments at tau = {result['tau']:.2g} (mean entropy {result['entropy']:.2f} nats)",
                 fontsize=11)
    return fig


def decode_upload(value) -> dict[str, Image.Image]:
    """{file name: RGB image} from a FileUpload value (ipywidgets 8: a tuple of dicts with 'name' and
    'content'; ipywidgets 7: a dict name -> {'content': ...}). Unreadable files raise ValueError."""
    entries = value.values() if isinstance(value, Mapping) else value
    out = {}
    for entry in entries:
        name = entry.get("name") or (entry.get("metadata") or {}).get("name") or f"upload {len(out)}"
        try:
            out[name] = Image.open(io.BytesIO(bytes(entry["content"]))).convert("RGB")
        except Exception as error:  # PIL raises several types for non-images
            raise ValueError(f"{name} is not a readable image ({type(error).__name__}: {error})") from None
    return out


class MixtureInspector(ipywidgets.VBox):
    """Controls above the figure of `inspector_figure` (an ipywidgets box: display it directly).

    Controls: `image` (dropdown over the given images and uploads), `upload` (FileUpload: the image
    is added to the dropdown and selected), `component` (toggle buttons), `tau` (log slider),
    `opacity` (slider). State: `scores` of the current image, `result` of `inspect`, `figure.value`
    (PNG bytes), `status` (HTML), `error` (the last upload error message, or '').
    """

    def __init__(self, model: segmentation.MixtureModel, images: Mapping[str, object], negatives: torch.Tensor,
                 shifts: int = 4, tau: float | None = None, opacity: float = 0.5):
        if not images:
            raise ValueError("the inspector needs at least one image")
        w = ipywidgets
        self.model, self.negatives, self.shifts = model, negatives, shifts
        self.images = dict(images)
        self._cache: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        self.image = w.Dropdown(options=list(self.images), description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.component = w.ToggleButtons(options=[(str(j), j) for j in range(model.k)], value=0,
                                         description="component", style={"button_width": "34px"})
        self.tau = w.FloatLogSlider(value=tau or model.tau, base=10, min=-1, max=1, step=0.05, description="tau",
                                    continuous_update=False, readout_format=".2f")
        self.opacity = w.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False)
        self.figure = w.Image(format="png")
        self.status = w.HTML()
        self.error = ""
        self.scores: torch.Tensor | None = None
        self.display_image: np.ndarray | None = None
        self.result: dict = {}
        self.image.observe(lambda _: self.update(recompute=True), names="value")
        self.tau.observe(lambda _: self.update(), names="value")
        for control in (self.component, self.opacity):
            control.observe(lambda _: self.redraw(), names="value")
        self.upload.observe(lambda change: self.add_upload(change["new"]), names="value")
        super().__init__([w.HBox([self.image, self.upload]), self.component, w.HBox([self.tau, self.opacity]),
                          self.figure, self.status])
        self.update(recompute=True)

    def add_upload(self, value) -> None:
        """Add the uploaded image(s) to the dropdown and select the first (errors go to the status line)."""
        if not value:
            return
        try:
            uploads = decode_upload(value)
        except ValueError as error:
            self.error = str(error)
            self.status.value = f"<span style='color:#b00'>{error}</span>"
            return
        self.error = ""
        names = [f"upload: {name}" for name in uploads]
        self.images.update(zip(names, uploads.values()))
        self.image.options = list(self.images)
        self.image.value = names[0]

    def update(self, recompute: bool = False) -> None:
        """Recompute the assignments (and, for a new image, its scores), then redraw."""
        name = self.image.value
        if recompute or self.scores is None:
            if name not in self._cache:
                shown, _ = prepare_image(self.images[name], self.model.config.image_size)
                self._cache[name] = (shown, image_scores(self.model, self.images[name], self.negatives, self.shifts))
            self.display_image, self.scores = self._cache[name]
        self.result = inspect(self.scores, self.model.config.image_size, self.tau.value, self.shifts)
        self.redraw()

    def redraw(self) -> None:
        fig = inspector_figure(self.display_image, self.result, self.component.value, self.opacity.value,
                               title=f"{self.image.value}: tau = {self.tau.value:.2f}, "
                                     f"mean entropy {self.result['entropy']:.2f} nats")
        self.figure.value = figure_png(fig, dpi=90)
        share = self.result["share"]
        if not self.error:
            self.status.value = (f"component {self.component.value} holds {100 * share[self.component.value]:.0f}% "
                                 f"of the pixels; largest: component {int(share.argmax())} "
                                 f"({100 * share.max():.0f}%)")


def mixture_inspector(model: segmentation.MixtureModel, images: Mapping[str, object], negatives: torch.Tensor,
                      **kwargs) -> MixtureInspector:
    """An inspector of `model`'s assignment maps over `images` (name -> PIL image or array), ready to display."""
    return MixtureInspector(model, images, negatives, **kwargs)
