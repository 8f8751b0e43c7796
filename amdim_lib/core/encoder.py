"""The AMDIM encoder: a ResNet-like convnet that returns global (1x1) and local (5x5, 7x7) features.

Read top to bottom: building blocks first, then the three stacks (32, 64 and 128 px inputs), then the
`Encoder` that ties a stack to the two heads that embed the local features.

Shapes for a 32 px input (64 and 128 px reach the same 7, 5, 3, 1 grid with more stride):

    conv3 30 -> res1x1 30 -> block 14 -> block 7 -> [BN] [r7] -> block 5 [r5] -> block 3 -> res 1 -> BN [r1]

([BN]: only with use_bn; it normalises the 7x7 features that both the r7 head and the 5x5 block read.)

Every residual branch ends in a zero-initialised 1x1 conv, so a fresh encoder is a stack of pooled
identities on top of its first conv: training starts from a smooth, well-conditioned network.

Every batch norm is a `ViewBatchNorm2d`: when both views of a batch go through one forward pass
(`views_in_batch`), each view is normalised with its own batch statistics, as in the official code,
which encodes the two views in separate calls.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZES = (32, 64, 128)


class Features(NamedTuple):
    """Multiscale features of a batch: r1 (B, n_rkhs, 1, 1), r5 (B, n_rkhs, 5, 5), r7 (B, n_rkhs, 7, 7)."""

    r1: torch.Tensor
    r5: torch.Tensor
    r7: torch.Tensor


class ViewBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, can normalise the views stacked in a batch separately.

    With `views` = n > 1 the batch is n equal chunks (all images of view 1, then of view 2, ...):
    each chunk is normalised with its own statistics and updates the running statistics in turn,
    exactly as n separate forward passes would. In eval mode, or with n = 1, it is plain BatchNorm2d.
    `views` is set for one forward pass by `views_in_batch`.
    """

    views = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.views == 1:
            return self.normalise(x)
        if x.shape[0] % self.views:
            raise ValueError(f"a batch of {x.shape[0]} cannot be split into {self.views} views of equal size")
        return torch.cat([self.normalise(chunk) for chunk in x.chunk(self.views)])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm of one group of images (a subclass may gather its statistics elsewhere)."""
        return super().forward(x)


@contextlib.contextmanager
def views_in_batch(module: nn.Module, views: int):
    """While active, every ViewBatchNorm2d in `module` treats a training batch as `views` stacked views."""
    norms = [m for m in module.modules() if isinstance(m, ViewBatchNorm2d)]
    previous = [m.views for m in norms]
    for m in norms:
        m.views = views
    try:
        yield module
    finally:
        for m, n in zip(norms, previous):
            m.views = n


def _batch_norm(channels: int, use_bn: bool) -> nn.Module:
    # Optional BN is left out entirely (not merely skipped) so that every parameter is used.
    return ViewBatchNorm2d(channels) if use_bn else nn.Identity()


class Conv3x3(nn.Module):
    """Optional padding -> conv with bias -> ReLU (the stem of the encoder)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, pad: int = 0, pad_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel, stride, padding=pad, padding_mode=pad_mode, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class ConvResNxN(nn.Module):
    """Residual unit: conv w x w stride s -> [BN] -> ReLU -> 1x1 conv, plus a pooled identity shortcut.

    The shortcut is avg_pool(w, s) zero-padded along channels when the unit widens; there is no
    activation after the sum.
    """

    def __init__(self, n_in: int, n_out: int, width: int, stride: int, use_bn: bool = False):
        super().__init__()
        if n_out < n_in:
            raise ValueError(f"ConvResNxN cannot narrow channels ({n_in} -> {n_out}); widths must not shrink")
        self.width, self.stride, self.n_grow = width, stride, n_out - n_in
        self.conv1 = nn.Conv2d(n_in, n_out, width, stride, bias=False)
        self.bn1 = _batch_norm(n_out, use_bn)
        self.conv2 = nn.Conv2d(n_out, n_out, 1, bias=False)
        nn.init.zeros_(self.conv2.weight)  # the branch starts at zero: the unit is its shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(F.relu(self.bn1(self.conv1(x))))
        shortcut = x if self.width == 1 and self.stride == 1 else F.avg_pool2d(x, self.width, self.stride)
        if self.n_grow:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.n_grow))
        return branch + shortcut


class ConvResBlock(nn.Sequential):
    """One ConvResNxN(w, s) that changes resolution and width, then depth-1 1x1 units."""

    def __init__(self, n_in: int, n_out: int, width: int, stride: int, depth: int, use_bn: bool = False):
        units = [ConvResNxN(n_in, n_out, width, stride, use_bn)]
        units += [ConvResNxN(n_out, n_out, 1, 1, use_bn) for _ in range(depth - 1)]
        super().__init__(*units)


class LocalHead(nn.Module):
    """Embeds local features into the n_rkhs space: 1x1 conv -> ReLU -> 1x1 conv, plus a 1x1
    shortcut initialised near the identity, then BN (always on: it sets the scale of the scores)."""

    def __init__(self, n_in: int, n_out: int, use_bn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 1, bias=False)
        self.bn1 = _batch_norm(n_out, use_bn)
        self.conv2 = nn.Conv2d(n_out, n_out, 1, bias=False)
        self.shortcut = nn.Conv2d(n_in, n_out, 1, bias=True)
        self.bn_out = ViewBatchNorm2d(n_out)
        nn.init.zeros_(self.conv2.weight)
        if n_out >= n_in:  # identity on the first n_in channels, small noise elsewhere
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                self.shortcut.weight[:, :, 0, 0].diagonal().fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.bn_out(branch + self.shortcut(x))


def local_width(image_size: int, ndf: int) -> int:
    """Channels of the 7x7 and 5x5 trunk features: 4*ndf at 32 px, 8*ndf at 64 and 128 px."""
    return (4 if image_size == 32 else 8) * ndf


def _trunk(image_size: int, ndf: int, n_rkhs: int, n_depth: int, use_bn: bool):
    """The convolutional stack split at the r7 and r5 taps: (to_r7, to_r5, to_r1)."""
    block = lambda n_in, n_out, w, s: ConvResBlock(n_in, n_out, w, s, n_depth, use_bn)  # noqa: E731
    wide = local_width(image_size, ndf)
    if image_size == 32:
        to_r7 = nn.Sequential(
            Conv3x3(3, ndf, 3, 1),                 # 30
            ConvResNxN(ndf, ndf, 1, 1, use_bn),    # 30
            block(ndf, 2 * ndf, 4, 2),             # 14
            block(2 * ndf, wide, 2, 2),            # 7
            _batch_norm(wide, use_bn),
        )
    else:
        if image_size == 64:
            stem = [Conv3x3(3, ndf, 3, 1)]         # 62
        else:                                      # 128 -> 64 with a strided 5x5, then as for 64 px
            stem = [Conv3x3(3, ndf, 5, 2, pad=2, pad_mode="reflect"), Conv3x3(ndf, ndf, 3, 1)]
        to_r7 = nn.Sequential(
            *stem,
            block(ndf, 2 * ndf, 4, 2),             # 30
            block(2 * ndf, 4 * ndf, 4, 2),         # 14
            block(4 * ndf, wide, 2, 2),            # 7
            _batch_norm(wide, use_bn),
        )
    to_r5 = block(wide, wide, 3, 1)                # 5
    to_r1 = nn.Sequential(
        block(wide, wide, 3, 1),                   # 3
        ConvResNxN(wide, n_rkhs, 3, 1, use_bn),    # 1
        ViewBatchNorm2d(n_rkhs),
    )
    return to_r7, to_r5, to_r1


class Encoder(nn.Module):
    """AMDIM encoder for 32, 64 or 128 px RGB inputs.

    Args:
        image_size: input side in pixels (32, 64 or 128).
        ndf: base width; the local features have 4*ndf (32 px) or 8*ndf (64/128 px) channels.
        n_rkhs: dimension of the embedding space in which global and local features are compared.
        n_depth: residual units per block (1 strided unit + n_depth-1 1x1 units).
        use_bn: batch norm inside the residual branches and on the 7x7 features (the paper's default
            is off); the heads' output BN and the final BN of r1 are always on.
    """

    def __init__(self, image_size: int = 32, ndf: int = 64, n_rkhs: int = 512, n_depth: int = 3, use_bn: bool = False):
        super().__init__()
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
        if n_depth < 1 or ndf < 1:
            raise ValueError(f"ndf and n_depth must be positive, got ndf={ndf}, n_depth={n_depth}")
        wide = local_width(image_size, ndf)
        if n_rkhs < wide:
            raise ValueError(
                f"n_rkhs={n_rkhs} is smaller than the local feature width {wide} "
                f"({wide // ndf} * ndf); use n_rkhs >= {wide}"
            )
        self.image_size, self.ndf, self.n_rkhs, self.n_depth, self.use_bn = image_size, ndf, n_rkhs, n_depth, use_bn
        self.to_r7, self.to_r5, self.to_r1 = _trunk(image_size, ndf, n_rkhs, n_depth, use_bn)
        self.head5 = LocalHead(wide, n_rkhs, use_bn)
        self.head7 = LocalHead(wide, n_rkhs, use_bn)

    def forward(self, x: torch.Tensor) -> Features:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} inputs, got {tuple(x.shape[-2:])}")
        h7 = self.to_r7(x)
        h5 = self.to_r5(h7)
        r1 = self.to_r1(h5)
        return Features(r1=r1, r5=self.head5(h5), r7=self.head7(h7))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
