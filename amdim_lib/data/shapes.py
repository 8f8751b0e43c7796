"""Shapes: a small procedural image-classification data set that needs no download.

Every image shows one object from ten shape classes (``SHAPE_CLASSES``) on a
textured, coloured background, optionally with a few thin lines and small blobs
("distractors") drawn underneath the object.  Images are rendered on the fly
from a random generator seeded by ``(seed, split, index)``, so

* the same ``(seed, split, index)`` always gives the same image, with no files
  and no global state, and a data loader worker can render any index on its own;
* the train and test splits come from different random streams and are disjoint.

Why it is built the way it is:

* Colour, position, scale and background are drawn independently of the class, so
  only the *shape* identifies the label.  The shapes stand upright, at 60-90 % of the
  image side (`Scene` says why).  A linear classifier on raw pixels does poorly (about
  16 % on held-out images at 32 px, chance is 10 %), while a human, or a network that has
  learned shape features, reads the class at a glance.  That gap is what a
  self-supervised representation should close.
* Shapes are described by (approximate) signed distance functions evaluated on a
  cached pixel grid with vectorised numpy.  The signed distance in pixels gives
  an anti-aliased coverage ``clip(0.5 - d, 0, 1)`` for free, and the object mask
  is exactly ``coverage >= 0.5`` (i.e. ``d <= 0``).  Rendering a 32 px image
  takes a fraction of a millisecond on one core, fast enough to generate data
  inside the training loop.
* Distractors are painted before the object, so they never cover it and the
  mask stays exact.  They are thin segments and small elongated blobs, never one
  of the ten class shapes at class scale.

``Shapes[i]`` returns ``(image, label, mask)``: an RGB ``PIL.Image`` of size
``image_size`` x ``image_size``, an ``int`` label in 0..9 and a boolean
``(H, W)`` numpy mask of the labelled object.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch.utils.data
from PIL import Image

__all__ = ["SHAPE_CLASSES", "Scene", "Shapes", "render_shape"]

SHAPE_CLASSES = [
    "circle",
    "square",
    "triangle",
    "star",
    "plus",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "semicircle",
]

_ALLOWED_SIZES = (32, 64, 128)
_SPLITS = {"train": 0, "test": 1}
_DEFAULT_SIZE = {"train": 10_000, "test": 2_000}

# Stream tags, so that the label stream and the image stream of the same
# (seed, split) never share a seed.
_IMAGE_STREAM = 0
_LABEL_STREAM = 1

# Low-resolution noise grid that is upsampled into the background texture.
_NOISE_GRID = 5


@dataclass(frozen=True)
class Scene:
    """What varies in a Shapes image besides the class, and how much. None of it depends on the label.

    The default was chosen on a validation part of the training split, for what AMDIM's demo budget
    can learn (trials: benchmarks/LOG.md, "Shapes scene design"; `python benchmarks/shapes_design.py`).
    Two choices decide it: the shapes stand upright, as objects in photographs mostly do (AMDIM's views
    never rotate an image, so nothing would teach the encoder that a turned star is still a star), and
    they fill 60-90 % of the image, so that the encoder's local features see their parts. The textured
    backgrounds stay: they cost the trained encoder nothing and keep the baselines low.
    `Scene(tilt=180, span=(0.4, 0.7))` is the earlier design: any orientation, smaller objects.
    """
    tilt: float = 0.0                   # largest rotation either way, in degrees (0: upright, 180: any)
    # Diameter of the object's bounding circle as a fraction of the image side. The shapes are sized to
    # similar areas (1.1-1.5 in units of the bounding radius squared, the thin arrow being the smallest)
    # so that the object's pixel count says little about its class; their visible extent is 70-100 %
    # of the bounding circle.
    span: tuple[float, float] = (0.6, 0.9)
    grating: float = 1.0                # strength of the background's stripes
    blotches: float = 0.35              # strength of its low-frequency noise
    grain: float = 0.08                 # strength of its per-pixel grain
    max_distractors: int = 3            # thin lines and small blobs under the object (0-3 drawn)


DEFAULT_SCENE = Scene()


# ---------------------------------------------------------------------------
# Cached geometry
# ---------------------------------------------------------------------------

_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_UPSAMPLE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a size x size image, computed once per size."""
    grid = _GRID_CACHE.get(size)
    if grid is None:
        coords = np.arange(size, dtype=np.float32) + np.float32(0.5)
        x = np.broadcast_to(coords[None, :], (size, size))
        y = np.broadcast_to(coords[:, None], (size, size))
        grid = (np.ascontiguousarray(x), np.ascontiguousarray(y))
        for a in grid:
            a.setflags(write=False)  # shared between images: guard against in-place edits
        _GRID_CACHE[size] = grid
    return grid


def _upsample_matrix(low: int, size: int) -> np.ndarray:
    """(size, low) linear-interpolation matrix, so that U @ N @ U.T upsamples a low x low grid.

    Two small matrix products are far cheaper than calling an image resizer per image.
    """
    key = (low, size)
    mat = _UPSAMPLE_CACHE.get(key)
    if mat is None:
        # Sample positions of the output pixels in low-grid coordinates (cell centres aligned).
        pos = (np.arange(size) + 0.5) * low / size - 0.5
        pos = np.clip(pos, 0.0, low - 1.0)
        left = np.minimum(np.floor(pos).astype(int), low - 2)
        frac = pos - left
        mat = np.zeros((size, low), dtype=np.float32)
        mat[np.arange(size), left] = 1.0 - frac
        mat[np.arange(size), left + 1] = frac
        mat.setflags(write=False)
        _UPSAMPLE_CACHE[key] = mat
    return mat


# ---------------------------------------------------------------------------
# Signed distance functions in object-local units (bounding circle radius ~1).
# Negative inside, positive outside; all take and return float32 arrays.
# ---------------------------------------------------------------------------


def _sd_box(x, y, half_w, half_h):
    dx = np.abs(x) - np.float32(half_w)
    dy = np.abs(y) - np.float32(half_h)
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    inside = np.minimum(np.maximum(dx, dy), 0.0)
    return outside + inside


def _sd_circle(x, y, radius, cx=0.0, cy=0.0):
    return np.hypot(x - np.float32(cx), y - np.float32(cy)) - np.float32(radius)


def _sd_star(x, y, points, r_out, r_in):
    """Star with `points` tips at radius r_out and concave corners at radius r_in.

    A regular polygon is the special case r_in = r_out * cos(pi / points).  We fold
    the plane into half of one angular wedge (using the shape's mirror and
    rotational symmetry), where the boundary is one segment from a tip to the next
    corner, and take the signed distance to that segment.
    """
    wedge = 2.0 * math.pi / points
    theta = np.arctan2(y, x)
    theta = np.abs(np.mod(theta + wedge / 2.0, wedge) - wedge / 2.0)
    r = np.hypot(x, y)
    px = r * np.cos(theta)
    py = r * np.sin(theta)
    ax, ay = r_out, 0.0
    ex = r_in * math.cos(wedge / 2.0) - ax
    ey = r_in * math.sin(wedge / 2.0) - ay
    qx = px - np.float32(ax)
    qy = py  # ay == 0
    h = np.clip((qx * np.float32(ex) + qy * np.float32(ey)) / np.float32(ex * ex + ey * ey), 0.0, 1.0)
    dist = np.hypot(qx - h * np.float32(ex), qy - h * np.float32(ey))
    # The origin lies on the positive side of the tip->corner edge.
    cross = np.float32(ex) * qy - np.float32(ey) * qx
    return np.where(cross > 0.0, -dist, dist)


def _sd_circle_shape(x, y):
    return _sd_circle(x, y, 0.68)


def _sd_square(x, y):
    return _sd_box(x, y, 0.6, 0.6)


def _sd_triangle(x, y):
    return _sd_star(x, y, 3, 1.0, math.cos(math.pi / 3))


def _sd_star5(x, y):
    return _sd_star(x, y, 5, 1.0, 0.47)


def _sd_plus(x, y):
    return np.minimum(_sd_box(x, y, 0.88, 0.25), _sd_box(x, y, 0.25, 0.88))


def _sd_ring(x, y):
    # Annulus between radii 0.55 and 0.85: hole wide enough to stay open at 32 px.
    return np.abs(np.hypot(x, y) - np.float32(0.7)) - np.float32(0.15)


def _sd_crescent(x, y):
    # Disc minus an offset disc, shifted so that the crescent fits the unit bounding circle.
    x = x - np.float32(0.2)
    return np.maximum(_sd_circle(x, y, 0.86), -_sd_circle(x, y, 0.64, cx=0.5))


def _heart_constants():
    """Half-plane coefficients of the heart's lower "kite", derived once at import.

    The heart is two discs (lobes) plus a convex kite: the tip, the two points where
    lines from the tip touch the discs, and the point between the lobes.  The kite
    lies inside the union, so there is no gap between lobes and point.
    """
    a, b, r, tip = 0.42, 0.25, 0.5, -0.85  # right lobe centre (a, b), radius r; tip (0, tip)
    wx, wy = a, b - tip
    length = math.hypot(wx, wy)
    alpha = math.asin(r / length)
    ux, uy = wx / length, wy / length
    # Tangent direction from the tip: the tip->centre direction turned outwards by alpha.
    dx = ux * math.cos(alpha) + uy * math.sin(alpha)
    dy = -ux * math.sin(alpha) + uy * math.cos(alpha)
    n1 = (dy, -dx)  # outward normal of the tangent line
    tx, ty = a + r * n1[0], b + r * n1[1]  # tangent point
    ex, ey = -tx, b - ty  # edge from tangent point to (0, b)
    norm = math.hypot(ex, ey)
    n2 = (ey / norm, -ex / norm)
    return a, b, r, tip, n1, n2


_HEART = _heart_constants()
_HEART_SCALE = 0.86


def _sd_heart(x, y):
    a, b, r, tip, n1, n2 = _HEART
    # Shrink by _HEART_SCALE (distances scale with it) and move the centroid to the origin.
    inv = np.float32(1.0 / _HEART_SCALE)
    ax = np.abs(x) * inv
    y = (y + np.float32(0.05)) * inv
    lobes = _sd_circle(ax, y, r, cx=a, cy=b)
    side = ax * np.float32(n1[0]) + (y - np.float32(tip)) * np.float32(n1[1])
    top = ax * np.float32(n2[0]) + (y - np.float32(b)) * np.float32(n2[1])
    return np.minimum(lobes, np.maximum(side, top)) * np.float32(_HEART_SCALE)


def _sd_arrow(x, y):
    # Shaft from x = -0.95 to 0.0 (half-width 0.24), overlapping the head's base.
    shaft = _sd_box(x + np.float32(0.475), y, 0.475, 0.24)
    # Head: triangle from a base at x = -0.05 (half-height 0.66) to a tip at x = 0.95,
    # as the intersection of three half-planes (exact enough within a pixel of the edge).
    nx, ny = 0.66, 1.0
    norm = math.hypot(nx, ny)
    slant = ((x - np.float32(0.95)) * np.float32(nx / norm)) + np.abs(y) * np.float32(ny / norm)
    head = np.maximum(np.float32(-0.05) - x, slant)
    return np.minimum(shaft, head)


def _sd_semicircle(x, y):
    # Half disc, centred on its centroid (4R / 3pi above the flat edge).
    y = y + np.float32(0.39)
    return np.maximum(np.hypot(x, y) - np.float32(0.92), -y)


_SDFS = (
    _sd_circle_shape,
    _sd_square,
    _sd_triangle,
    _sd_star5,
    _sd_plus,
    _sd_ring,
    _sd_crescent,
    _sd_heart,
    _sd_arrow,
    _sd_semicircle,
)
assert len(_SDFS) == len(SHAPE_CLASSES)


def render_shape(class_id: int, size: int, center, radius: float, angle: float) -> np.ndarray:
    """Signed distance in pixels (float32, (size, size)) of one class shape.

    ``center`` is (x, y) in pixels, ``radius`` the radius of the shape's bounding
    circle in pixels and ``angle`` the rotation in radians.  Negative inside; the
    anti-aliased coverage is ``clip(0.5 - sdf, 0, 1)`` and the mask ``sdf <= 0``.
    """
    if not 0 <= class_id < len(_SDFS):
        raise ValueError(f"class_id must be in 0..{len(_SDFS) - 1}, got {class_id}")
    gx, gy = _pixel_grid(size)
    c, s = math.cos(angle), math.sin(angle)
    inv = 1.0 / radius
    dx = gx - np.float32(center[0])
    dy = gy - np.float32(center[1])
    # Rotate the grid into the shape's frame and scale to unit bounding radius.
    lx = dx * np.float32(c * inv) + dy * np.float32(s * inv)
    ly = dy * np.float32(c * inv) - dx * np.float32(s * inv)
    # Image rows grow downwards; flip y so "up" in the local frame is up in the picture.
    return _SDFS[class_id](lx, -ly) * np.float32(radius)


# ---------------------------------------------------------------------------
# Image synthesis
# ---------------------------------------------------------------------------


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased pixel coverage from a signed distance in pixels."""
    return np.clip(np.float32(0.5) - sdf, 0.0, 1.0)


def _paint(img: np.ndarray, cov: np.ndarray, colour) -> None:
    """Alpha-blend a colour (or an (H, W, 3) colour field) into img in place."""
    img += cov[..., None] * (np.asarray(colour, dtype=np.float32) - img)


def _background(size: int, c1, c2, params, noise, grain, scene: Scene) -> np.ndarray:
    """Two colours blended through a random grating plus upsampled low-resolution noise and film grain,
    each as strong as `scene` says."""
    gx, gy = _pixel_grid(size)
    freq, orient, phase, w_grating, fine = params
    # 0.5 to 4 cycles across the image, any orientation.
    k = (0.5 + 3.5 * freq) * 2.0 * math.pi / size
    o = orient * math.pi
    wave = np.sin(gx * np.float32(k * math.cos(o)) + gy * np.float32(k * math.sin(o)) + np.float32(2 * math.pi * phase))
    up = _upsample_matrix(_NOISE_GRID, size)
    blotches = up @ noise @ up.T
    # Mix weight between the grating and the blotchy noise is random per image.
    t = (np.float32(0.5) + np.float32(0.5 * scene.grating * w_grating) * wave
         + np.float32(scene.blotches * (1.0 - w_grating)) * blotches)
    t += grain * np.float32(scene.grain * fine)  # fine film grain of random strength
    np.clip(t, 0.0, 1.0, out=t)
    return c1 + t[..., None] * (c2 - c1)


def _contrasting_colour(cand: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """The first of some uniform random RGB candidates that stands out from the background.

    The background takes colours on the segment c1-c2, so we require a minimum RGB
    distance to that segment (falling back to the most distant candidate).  This is
    rejection sampling that never looks at the class, so colour says nothing about it.
    """
    seg = c2 - c1
    h = np.clip(((cand - c1) @ seg) / max(float(seg @ seg), 1e-6), 0.0, 1.0)
    dist = np.linalg.norm(cand - (c1 + h[:, None] * seg), axis=1)
    ok = np.flatnonzero(dist > 0.45)
    return cand[ok[0]] if ok.size else cand[int(np.argmax(dist))]


def _distractor(size: int, params) -> np.ndarray:
    """Signed distance (pixels) of a thin line segment or a small elongated blob."""
    gx, gy = _pixel_grid(size)
    kind, a, b, c, d, e = params
    if kind < 0.5:
        # Segment between two random points, 1-2 px wide at 32 px.
        x0, y0, x1, y1 = a * size, b * size, c * size, d * size
        ex, ey = x1 - x0, y1 - y0
        qx = gx - np.float32(x0)
        qy = gy - np.float32(y0)
        h = np.clip((qx * np.float32(ex) + qy * np.float32(ey)) / np.float32(max(ex * ex + ey * ey, 1e-6)), 0.0, 1.0)
        half_width = (0.5 + 0.5 * e) * size / 32.0
        return np.hypot(qx - h * np.float32(ex), qy - h * np.float32(ey)) - np.float32(half_width)
    # Ellipse with radii 3-7 % and 1-5 % of the side: a blob, far smaller than any object.
    cx, cy = a * size, b * size
    ra = (0.03 + 0.04 * c) * size
    rb = (0.3 + 0.4 * d) * ra
    rot = e * math.pi
    co, si = math.cos(rot), math.sin(rot)
    dx = gx - np.float32(cx)
    dy = gy - np.float32(cy)
    u = (dx * np.float32(co) + dy * np.float32(si)) * np.float32(1.0 / ra)
    v = (dy * np.float32(co) - dx * np.float32(si)) * np.float32(1.0 / rb)
    # (|p/r| - 1) * min radius: a conservative distance, fine for anti-aliasing small blobs.
    return (np.hypot(u, v) - np.float32(1.0)) * np.float32(rb)


def _render(rng: np.random.Generator, label: int, size: int, distractors: bool, scene: Scene):
    # Draw every scene parameter first, in a fixed order and amount, so that the
    # same index shows the same scene at every image size and with or without
    # distractors; only the per-pixel grain (drawn last) depends on the size.
    c1, c2 = rng.random((2, 3), dtype=np.float32)
    bg_params = rng.random(5)
    noise = rng.standard_normal((_NOISE_GRID, _NOISE_GRID), dtype=np.float32)
    n_distractors = int(rng.integers(0, 4))
    distractor_params = rng.random((3, 6))
    distractor_colours = rng.random((3, 3), dtype=np.float32)
    span, px, py, angle, shade_amp, shade_dir = rng.random(6)
    colour = _contrasting_colour(rng.random((16, 3), dtype=np.float32), c1, c2)
    grain = rng.standard_normal((size, size), dtype=np.float32)

    img = _background(size, c1, c2, bg_params, noise, grain, scene)
    if distractors:
        # Painted before the object, so they never hide it and the mask stays exact.
        for i in range(min(n_distractors, scene.max_distractors)):
            _paint(img, _coverage(_distractor(size, distractor_params[i])), distractor_colours[i])

    low, high = scene.span
    radius = (low + (high - low) * span) * size / 2.0
    # Keep the bounding circle inside the image, so the whole object is visible.
    cx = radius + px * (size - 2.0 * radius)
    cy = radius + py * (size - 2.0 * radius)
    sdf = render_shape(label, size, (cx, cy), radius, math.radians((2.0 * angle - 1.0) * scene.tilt))

    # Mild linear shading (+-25 % across the bounding circle) so the object is not a flat patch.
    gx, gy = _pixel_grid(size)
    sd = shade_dir * 2.0 * math.pi
    gain = (shade_amp - 0.5) * 0.5 / radius
    ramp = (gx - np.float32(cx)) * np.float32(gain * math.cos(sd)) + (gy - np.float32(cy)) * np.float32(gain * math.sin(sd))
    shaded = np.clip(colour * (np.float32(1.0) + ramp[..., None]), 0.0, 1.0)
    _paint(img, _coverage(sdf), shaded)

    pixels = (img * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    return Image.fromarray(pixels), sdf <= 0.0


def _block_labels(seed: int, split_id: int, blocks: np.ndarray) -> np.ndarray:
    """Labels of blocks of ten consecutive indices: each block is a permutation of 0..9.

    Balanced by construction and independent of the data set length, so index i
    has the same label whatever `size` is.
    """
    out = np.empty((len(blocks), 10), dtype=np.int64)
    for row, block in enumerate(blocks):
        out[row] = np.random.default_rng([seed, split_id, _LABEL_STREAM, int(block)]).permutation(10)
    return out


_CACHE_BYTES = 512 * 2**20  # rendered RGB + mask bytes up to which a split keeps its items in memory


class Shapes(torch.utils.data.Dataset):
    """Procedural ten-class shape data set; see the module docstring.

    Args:
        split: "train" or "test" (disjoint random streams).
        image_size: side of the square images, one of 32, 64, 128.
        size: number of images (default 10,000 for train, 2,000 for test).
        seed: data set seed; the image at (seed, split, index) never changes.
        distractors: paint 0-3 lines/blobs under the object.
        scene: what varies besides the class (`Scene`); None: DEFAULT_SCENE.

    ``dataset[i]`` returns ``(image, label, mask)`` with ``image`` an RGB PIL image,
    ``label`` an int in 0..9 and ``mask`` a bool (H, W) array of the object's pixels.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 32,
        size: int | None = None,
        seed: int = 0,
        distractors: bool = True,
        scene: Scene | None = None,
    ):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if image_size not in _ALLOWED_SIZES:
            raise ValueError(f"image_size must be one of {list(_ALLOWED_SIZES)}, got {image_size!r}")
        if size is None:
            size = _DEFAULT_SIZE[split]
        size = int(size)
        if size < 0:
            raise ValueError(f"size must be non-negative, got {size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")  # SeedSequence needs it
        self.split = split
        self.image_size = int(image_size)
        self.size = size
        self.seed = int(seed)
        self.distractors = bool(distractors)
        self.scene = DEFAULT_SCENE if scene is None else scene
        self.classes = list(SHAPE_CLASSES)
        self._split_id = _SPLITS[split]
        n_blocks = (size + 9) // 10
        self.targets = _block_labels(self.seed, self._split_id, np.arange(n_blocks)).reshape(-1)[:size].tolist()
        # Rendering is a fixed function of the index, so rendered items are kept (a training epoch
        # then costs only the augmentations) unless the split is too large to hold comfortably.
        self._cache = {} if size * image_size**2 * 4 <= _CACHE_BYTES else None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        index = operator.index(index)  # accepts Python, numpy and torch integers, rejects floats
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for Shapes of length {self.size}")
        label = self.targets[index]
        if self._cache is not None and index in self._cache:
            image, mask = self._cache[index]
            return image.copy(), label, mask.copy()  # copies: a caller may modify what it gets
        rng = np.random.default_rng([self.seed, self._split_id, _IMAGE_STREAM, index])
        image, mask = _render(rng, label, self.image_size, self.distractors, self.scene)
        if self._cache is not None:
            self._cache[index] = image.copy(), mask.copy()
        return image, label, mask

    def __repr__(self) -> str:
        return (
            f"Shapes(split={self.split!r}, image_size={self.image_size}, size={self.size}, "
            f"seed={self.seed}, distractors={self.distractors})"
        )
