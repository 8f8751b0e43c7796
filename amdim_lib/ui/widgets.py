"""Interactive inspectors: pure callbacks (values in, arrays or figures out) under a thin ipywidgets layer.

Everything an inspector shows comes from a plain function that tests can call directly:

- `views_for(image, policy, strength, level, seed, n_pairs)`: the view pairs AMDIM would train on;
- `single_augmentations(image, policy, ...)`: each augmentation of a policy on its own;
- `views_figure(pairs, ...)`: the figure the inspector displays.

`views_inspector(images)` wires them to dropdowns, a slider and a button. The widget keeps its current
pairs in `.pairs` and the rendered PNG in `.figure.value`, so its state can be checked without a browser.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import ipywidgets
import numpy as np
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from ..core.views import LEVELS, POLICIES, POLICY_FOR_SIZE, policy_parts, eval_geometry, item_seed, make_two_views, with_seed
from .viz import figure_png, to_display

SIZE_FOR_POLICY = {policy: size for size, policy in POLICY_FOR_SIZE.items()}  # cifar 32, stl10 64, imagenet 128


def as_pil(image) -> Image.Image:
    """A PIL RGB image from a PIL image, an (H, W, 3) uint8 array or an (H, W, 3) float array in [0, 1]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array)


def _seeded(seed: int, index: int, fn):
    """Run fn() with torch's global generator seeded from (seed, index), leaving the caller's state as it was."""
    return with_seed(item_seed(seed, 0, index), fn)


def views_for(image, policy: str = "cifar", strength: float = 1.0, level: str = "full", seed: int = 0,
              n_pairs: int = 4, image_size: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_pairs` pairs of views of `image` under a policy, as (H, W, 3) float arrays in [0, 1].

    Each pair is one draw of the library's two-view augmentation (`views.make_two_views`: a shared
    flip, then the policy twice); pair k depends only on (seed, k), so asking for more pairs keeps the
    first ones. `image_size` defaults to the policy's (cifar 32, stl10 64, imagenet and its stronger
    variants 128).
    """
    size = image_size or SIZE_FOR_POLICY.get(policy, 128)  # other names: the ImageNet-style options
    two_views = make_two_views(policy, size, strength=strength, level=level)
    pil = as_pil(image)
    pairs = []
    for k in range(n_pairs):
        x1, x2 = _seeded(seed, k, lambda: two_views(pil))
        pairs.append((to_display(x1), to_display(x2)))
    return pairs


def mean_view_difference(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean absolute pixel difference between the two views of each pair (0: identical views)."""
    return float(np.mean([np.abs(a - b).mean() for a, b in pairs]))


def single_augmentations(image, policy: str = "cifar", strength: float = 1.0, n: int = 5, seed: int = 0,
                         image_size: int | None = None) -> dict[str, list[np.ndarray]]:
    """Each ingredient of a policy applied on its own to `image` (label -> images in [0, 1]).

    The transforms are the policy's own (`views.policy_parts`), with their random application forced
    on so that every sample shows the effect: the geometric part (translation for cifar, random
    resized crop otherwise), then each photometric transform (colour jitter, grayscale, ...), the
    horizontal flip and, last, the full policy as one view sees it. Random ingredients get `n`
    samples, deterministic ones (original, grayscale, flip) one.
    """
    size = image_size or SIZE_FOR_POLICY.get(policy, 128)
    geometric, photometric = policy_parts(policy, size, strength)
    pil = as_pil(image)
    base = eval_geometry(policy, size)(pil)
    steps = {"original": (lambda: base, False),
             "translate / crop" if policy == "cifar" else "random resized crop": (lambda: geometric(pil), True)}
    for transform in photometric:
        if isinstance(transform, T.RandomGrayscale):
            steps["grayscale"] = (lambda: TF.rgb_to_grayscale(base, num_output_channels=3), False)
        else:
            # RandomApply([t], p) -> t itself, applied every time
            inner = transform.transforms[0] if isinstance(transform, T.RandomApply) else transform
            label = "colour jitter" if isinstance(inner, T.ColorJitter) else type(inner).__name__
            steps[label] = (lambda inner=inner: inner(base), True)
    steps["flip"] = (lambda: TF.hflip(base), False)
    full = T.Compose([geometric, *photometric])
    steps["full policy"] = (lambda: full(pil), True)
    return {label: [to_display(np.asarray(_seeded(seed, k, fn))) for k in range(n if random else 1)]
            for label, (fn, random) in steps.items()}


def views_figure(pairs: Sequence[tuple[np.ndarray, np.ndarray]], title: str = "", cell: float = 1.4):
    """A one-row figure of view pairs, built without pyplot (no global state, nothing auto-displayed)."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when a figure is drawn

    n = len(pairs)
    inner, outer, top = 0.05 * cell, 0.3 * cell, 0.3 + (0.35 if title else 0.0)
    width = 2 * n * cell + n * inner + (n - 1) * outer + 0.2
    height = cell + top + 0.1
    fig = Figure(figsize=(width, height))
    for k, pair in enumerate(pairs):
        for v, image in enumerate(pair):
            x = 0.1 + (2 * k + v) * cell + (k + v) * inner + k * outer
            ax = fig.add_axes((x / width, 0.1 / height, cell / width, cell / height))
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"pair {k + 1}, view {v + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


class ViewsInspector(ipywidgets.VBox):
    """Controls for `views_for` above the figure they produce (an ipywidgets box: display it directly).

    Attributes: the controls (`image`, `policy`, `level`, `strength`, `n_pairs`, `seed`, `resample`),
    `figure` (an ipywidgets.Image holding the PNG), `pairs` (the current view pairs) and `difference`
    (their mean absolute pixel difference). Changing any control recomputes everything.
    """

    def __init__(self, images: Mapping[str, object], policy: str = "cifar", n_pairs: int = 4, seed: int = 0,
                 policies: Sequence[str] = POLICIES):
        if not images:
            raise ValueError("views_inspector needs at least one image")
        w = ipywidgets
        self.images = dict(images)
        self.image = w.Dropdown(options=list(self.images), description="image")
        self.policy = w.Dropdown(options=list(policies), value=policy, description="policy")
        self.level = w.Dropdown(options=list(LEVELS), value="full", description="level")
        self.strength = w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1, description="strength",
                                      continuous_update=False)
        self.n_pairs = w.IntSlider(value=n_pairs, min=1, max=8, description="pairs", continuous_update=False)
        self.seed = w.IntText(value=seed, description="seed")
        self.resample = w.Button(description="resample", icon="refresh", tooltip="draw new views (seed + 1)")
        self.figure = w.Image(format="png")
        self.status = w.HTML()
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.difference = float("nan")
        self.resample.on_click(lambda _: setattr(self.seed, "value", self.seed.value + 1))
        for control in (self.image, self.policy, self.level, self.strength, self.n_pairs, self.seed):
            control.observe(lambda _: self.update(), names="value")
        super().__init__([w.HBox([self.image, self.policy, self.level]),
                          w.HBox([self.strength, self.n_pairs, self.seed, self.resample]),
                          self.figure, self.status])
        self.update()

    def update(self) -> None:
        """Recompute the pairs and the figure from the current control values."""
        self.pairs = views_for(self.images[self.image.value], self.policy.value, self.strength.value,
                               self.level.value, self.seed.value, self.n_pairs.value)
        self.difference = mean_view_difference(self.pairs)
        size = self.pairs[0][0].shape[0]
        title = (f"{self.image.value}: {self.policy.value} policy ({size} px), level {self.level.value}, "
                 f"strength {self.strength.value:.1f}, seed {self.seed.value}")
        self.figure.value = figure_png(views_figure(self.pairs, title))
        self.status.value = f"mean |view 1 - view 2| = {self.difference:.3f}"


def views_inspector(images: Mapping[str, object], **kwargs) -> ViewsInspector:
    """An inspector of view pairs over `images` (name -> image), ready to display."""
    return ViewsInspector(images, **kwargs)
