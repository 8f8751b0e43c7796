"""The two-view augmentation computed a whole batch at a time, on the training device.

Why: per-image PIL transforms cost ~0.7 ms a view on one CPU core. On a 2-core machine at the demo
size that is a third of a training step with nothing to overlap it with, and on a GPU it takes a
dozen worker processes to keep up. Here a data-loader item is only the fitted source image (uint8)
and a vector of uniform random numbers; the views of a whole batch are then a few tensor operations
(crops, grid_sample, colour blends) wherever the batch lives.

The policies are those of `amdim_lib.core.views`, parameter for parameter:
- shared horizontal flip (p 0.5), unless the level is 'none';
- cifar: translate by up to +-pad px with reflection (p 0.8); stl10 / imagenet: random resized crop
  (scale 0.3-1, ratio 0.7-1.4, 10 attempts then the whole image, as torchvision) resampled bicubically;
- colour jitter (p 0.8) with brightness, contrast, saturation, hue in a random order per view;
- grayscale (p 0.25); then normalisation.

Differences from the PIL path, by design: the arithmetic is in float (PIL rounds to uint8 after each
jitter step), the resized crop has no antialiasing (crops are at most 1.5x larger than the view), and
stl10 / imagenet sources are first fitted to a square of 1.5x the view size (STL-10's native 96 px
at 64 px; a centre square at 192 px for 128-px ImageNet views, hence `batch_views` is off in the
ImageNet presets). The learned-policy options (RandAugment, ...) have no batched form.

Randomness: an item's uniforms are drawn by `ViewPair` from (seed, epoch, index), so its views do not
depend on the batch it lands in, the worker count or the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.views import NORMALISATION, STRONG_POLICIES, FitSize, eval_geometry

# Layout of an item's uniforms: [flip, view 1 (VIEW_DRAWS), view 2 (VIEW_DRAWS)].
ATTEMPTS = 10                                   # random resized crop tries (torchvision's)
GEOMETRY_DRAWS = 2 * ATTEMPTS + 3               # apply (cifar) | offsets or (scale, ratio) x 10, position
JITTER_DRAWS = 1 + 4 + 4                        # apply, four factors, four keys whose order is the op order
VIEW_DRAWS = GEOMETRY_DRAWS + JITTER_DRAWS + 1  # ... then grayscale
N_UNIFORMS = 1 + 2 * VIEW_DRAWS
_LUMA = (0.2989, 0.587, 0.114)                  # torchvision's rgb_to_grayscale weights


def source_size(policy: str, image_size: int) -> int:
    """Side of the square source image that views are cut from: the view itself for translations,
    1.5x the view for random resized crops (96 px for 64-px STL-10 views, its native size)."""
    return image_size if policy == "cifar" else round(1.5 * image_size)


class BatchedViews:
    """Per item: image -> (uint8 source, uniforms). Per batch, on any device: `finish(sources,
    uniforms)` -> the two normalised views, (B, 3, image_size, image_size) each."""

    def __init__(self, policy: str, image_size: int, normalise: str = "default", level: str = "full",
                 strength: float = 1.0):
        if policy in STRONG_POLICIES:
            raise ValueError(f"policy {policy!r} has no batched form; set batch_views=False to use it")
        if policy not in ("cifar", "stl10", "imagenet"):
            raise ValueError(f"unknown view policy {policy!r}")
        self.policy, self.image_size = policy, image_size
        self.flip = level != "none"
        self.geometric = level in ("full", "crop")
        self.photometric = level == "full"
        # 'flip'/'none' keep the evaluation geometry, done per item; otherwise the views are cut from a fitted source.
        self.fit = FitSize(source_size(policy, image_size)) if self.geometric else eval_geometry(policy, image_size)
        s = strength
        self.hue = min(0.5, (0.2 if policy in ("cifar", "stl10") else 0.1) * s)
        self.jitter, self.p_jitter, self.p_gray = 0.4 * s, min(1.0, 0.8 * s), min(1.0, 0.25 * s)
        self.p_translate, self.pad = min(1.0, 0.8 * s), round(4 * image_size / 32)
        self.scale = (1.0 - 0.7 * min(s, 1.0), 1.0)
        mean, std = NORMALISATION[normalise]
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self._constants = {}  # device -> (mean, std) there: copied once, not on every batch
        self._generator = None  # made on first use, in each data-loader worker

    def __getstate__(self):
        return {**self.__dict__, "_constants": {}}  # (data-loader workers) device copies stay where they were made

    def item(self, image, seed: int):
        """The per-item part (data-loader side): fitted uint8 source (3, S, S) and the item's uniforms."""
        return self.source(image), self.draws(seed)

    def source(self, image) -> torch.Tensor:
        """The image fitted to the source square, as uint8 (3, S, S): a fixed function of the image,
        so `ViewPair` may keep it from epoch to epoch."""
        image = self.fit(image)
        image = image if image.mode == "RGB" else image.convert("RGB")
        width, height = image.size
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)  # (a copy: PIL's bytes stay PIL's)
        return pixels.view(height, width, 3).permute(2, 0, 1)

    def draws(self, seed: int) -> torch.Tensor:
        """The item's uniforms from a private generator seeded with `seed`: the same numbers as seeding
        the global generator, without saving and restoring its state per item."""
        if self._generator is None:
            self._generator = torch.Generator()
        return torch.rand(N_UNIFORMS, generator=self._generator.manual_seed(seed))

    def finish(self, sources: torch.Tensor, uniforms: torch.Tensor):
        """(B, 3, S, S) uint8 and (B, N_UNIFORMS) -> two (B, 3, size, size) float views."""
        x = sources.float() / 255
        if self.flip:
            x = _where_rows(uniforms[:, 0] < 0.5, x.flip(-1), x)
        # Both views as one batch of 2B: half as many small operations to dispatch.
        per_view = torch.cat([uniforms[:, 1:1 + VIEW_DRAWS], uniforms[:, 1 + VIEW_DRAWS:]])
        return self._view(torch.cat([x, x]), per_view).chunk(2)

    def _view(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.geometric:
            x = self._translate(x, u) if self.policy == "cifar" else self._resized_crop(x, u)
        if self.photometric:
            x = self._jitter(x, u[:, GEOMETRY_DRAWS:GEOMETRY_DRAWS + JITTER_DRAWS])
            x = _where_rows(u[:, -1] < self.p_gray, _gray(x).expand_as(x), x)
        if x.device not in self._constants:
            self._constants[x.device] = self.mean.to(x.device), self.std.to(x.device)
        mean, std = self._constants[x.device]
        return (x - mean) / std

    # ------------------------------------------------------------------ geometry

    def _translate(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """RandomCrop(size, padding=pad, reflect) with probability p_translate (else unshifted)."""
        pad, size = self.pad, self.image_size
        offsets = (u[:, 1:3] * (2 * pad + 1)).long().clamp(max=2 * pad)
        offsets = torch.where((u[:, :1] < self.p_translate), offsets, torch.full_like(offsets, pad))
        return crop_at(F.pad(x, (pad,) * 4, mode="reflect"), offsets, size)

    def _resized_crop(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop(size, scale, ratio (0.7, 1.4), bicubic) from a square source."""
        side = x.shape[-1]
        boxes = resized_crop_boxes(u[:, :GEOMETRY_DRAWS - 1], side, self.scale, (0.7, 1.4))
        return resample(x, boxes, self.image_size, "bicubic").clamp(0, 1)

    # ------------------------------------------------------------------ colour

    def _jitter(self, x: torch.Tensor, u: torch.Tensor, masked: bool | None = None) -> torch.Tensor:
        """ColorJitter(b, c, s, hue) with probability p_jitter, each view's four steps in its own order.

        Two equal ways: on a CPU, each step of each slot runs on just the images whose step it is
        there; elsewhere every step runs on every image and `where` keeps the right results, which
        costs more arithmetic but never waits for the device (no data-dependent shapes)."""
        factors = torch.cat([1 + self.jitter * (2 * u[:, 1:4] - 1), self.hue * (2 * u[:, 4:5] - 1)], 1)
        order = u[:, 5:9].argsort(1)  # (B, slot): a uniformly random permutation of the four steps
        steps = torch.arange(4, device=x.device)
        chosen = (u[:, 0] < self.p_jitter).view(-1, 1, 1) & (order.unsqueeze(2) == steps)  # (B, slot, step)
        masked = masked if masked is not None else x.device.type != "cpu"
        x = x if masked else x.clone()
        for slot in range(4):
            for step, adjust in enumerate(ADJUSTMENTS):
                if masked:
                    x = torch.where(chosen[:, slot, step].view(-1, 1, 1, 1), adjust(x, factors[:, step].view(-1, 1, 1, 1)), x)
                    continue
                rows = chosen[:, slot, step].nonzero().flatten()
                if len(rows):
                    x.index_copy_(0, rows, adjust(x.index_select(0, rows), factors[rows, step].view(-1, 1, 1, 1)))
        return x


# ---------------------------------------------------------------------- batched operations

def _where_rows(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Image b of a batch replaced by image a where condition (B,) holds; on a CPU only those rows
    are copied (a full `where` reads and writes every element)."""
    if condition.device.type != "cpu":
        return torch.where(condition.view(-1, 1, 1, 1), a, b)
    rows = condition.nonzero().flatten()
    return b.index_copy(0, rows, a.index_select(0, rows))

def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image crops: out[b] = x[b, :, i:i+size, j:j+size] with (i, j) = offsets[b]."""
    windows = x.unfold(2, size, 1).unfold(3, size, 1)  # (B, C, i, j, size, size), a view: nothing copied yet
    return windows[torch.arange(len(x), device=x.device), :, offsets[:, 0], offsets[:, 1]]


def resized_crop_boxes(u: torch.Tensor, side: int, scale, ratio) -> torch.Tensor:
    """(B, 4) boxes (i, j, h, w) of torchvision's RandomResizedCrop on a side x side image, from
    uniforms: ATTEMPTS pairs (area, log-ratio), then the position pair. The first attempt that fits
    wins; when none does, the whole (square) image."""
    area = side * side * (scale[0] + (scale[1] - scale[0]) * u[:, :ATTEMPTS])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, ATTEMPTS:2 * ATTEMPTS])
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    first = fits.float().argmax(1, keepdim=True)  # index of the first fitting attempt (0 when none fits)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    anyfit = fits.any(1)
    w, h = torch.where(anyfit, w, torch.full_like(w, side)), torch.where(anyfit, h, torch.full_like(h, side))
    i = (u[:, 2 * ATTEMPTS] * (side - h + 1)).floor().clamp(max=side - h)
    j = (u[:, 2 * ATTEMPTS + 1] * (side - w + 1)).floor().clamp(max=side - w)
    return torch.stack([i, j, h, w], 1)


def resample(x: torch.Tensor, boxes: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Crop boxes (i, j, h, w) of each image resized to size x size, sampling at pixel centres as
    F.interpolate does (align_corners=False); samples near a box's edge read the pixels beyond it."""
    side_h, side_w = x.shape[-2:]
    i, j, h, w = boxes.to(x.dtype).unbind(1)
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w / side_w, (2 * j + w) / side_w - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / side_h, (2 * i + h) / side_h - 1
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_LUMA, dtype=x.dtype, device=x.device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] (exactly x at factor 1)."""
    return torch.addcmul((1 - factor) * other, x, factor).clamp_(0, 1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luminance (the mean of the luminance is the luma of the channel means)."""
    return _blend(x, (x.mean((2, 3)) @ _luma(x)).view(-1, 1, 1, 1), factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), factor)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` (a fraction of the colour wheel), keeping HSV value and saturation.

    In HSV terms without the round trip: with V the max, C the max - min and H6 the hue in sixths,
    channel n (R 5, G 3, B 1) is V - C * clamp(min(k, 4 - k), 0, 1), k = (n + H6) mod 6."""
    value = x.amax(1, keepdim=True)
    chroma = value - x.amin(1, keepdim=True)
    r, g, b = x.split(1, 1)
    # C * H6: the sector's start (red 0, green 2, blue 4) plus the position within it; one division.
    scaled = torch.where(value == r, g - b, torch.where(value == g, b - r + 2 * chroma, r - g + 4 * chroma))
    sixths = scaled / torch.where(chroma == 0, 1.0, chroma) + 6 * shift.view(-1, 1, 1, 1)
    k = _CHANNEL_SIXTHS.to(x.device) + sixths
    k = k - 6 * torch.floor(k * (1 / 6))  # mod 6 (torch.remainder is several times slower on CPUs)
    return value - chroma * torch.minimum(k, 4 - k).clamp_(0, 1)


_CHANNEL_SIXTHS = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)


ADJUSTMENTS = (brightness, contrast, saturation, hue)  # ColorJitter's four steps, in its numbering
