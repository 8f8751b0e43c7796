"""Where each feature looks: the receptive fields of r1, r5 and r7, computed from the encoder's
layer stack and checked empirically by gradient footprints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .encoder import Encoder, local_width


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


def propagate(layers, field: tuple[int, int, int], grid: int) -> tuple[tuple[int, int, int], int]:
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
        state, grid = propagate(conv_geometry(stage), state, grid)
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
