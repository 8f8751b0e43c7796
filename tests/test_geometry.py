"""Unit tests of amdim_lib.core.geometry: receptive fields by hand and by gradient footprint."""

import numpy as np
import pytest
import torch

from amdim_lib.core import geometry
from amdim_lib.core.encoder import Encoder


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny ops: one thread is faster


# ----------------------------------------------------------------------------- receptive fields

# (size, jump, offset) of r7, r5, r1 by hand from the layer tables in DESIGN.md:
# 32 px: conv3 (3, 1) -> w4 s2 (6, 2) -> w2 s2 (8, 4) [r7] -> w3 (16, 4) [r5] -> w3 (24) -> w3 (32) [r1]
# 64 px: conv3 (3, 1) -> w4 s2 (6, 2) -> w4 s2 (12, 4) -> w2 s2 (16, 8) [r7] -> w3 (32) [r5] -> 48 -> 64 [r1]
# 128 px: conv5 s2 pad 2 (5, 2, offset -2) -> conv3 (9, 2) -> w4 s2 (15, 4) -> w4 s2 (27, 8) -> w2 s2 (35, 16) [r7]
#         -> w3 (67) [r5] -> 99 -> 131 [r1]
HAND = {
    32: {"r7": (8, 4, 0), "r5": (16, 4, 0), "r1": (32, 4, 0)},
    64: {"r7": (16, 8, 0), "r5": (32, 8, 0), "r1": (64, 8, 0)},
    128: {"r7": (35, 16, -2), "r5": (67, 16, -2), "r1": (131, 16, -2)},
}


@pytest.mark.parametrize("size", [32, 64, 128])
def test_receptive_fields_match_a_hand_computation(size):
    fields = geometry.receptive_fields(size)
    for name, (field, jump, offset) in HAND[size].items():
        f = fields[name]
        assert (f.size, f.jump, f.offset) == (field, jump, offset), name
        assert f.grid == {"r1": 1, "r5": 5, "r7": 7}[name]
    assert fields["r1"].covers_image and not fields["r5"].covers_image
    assert fields["r1"].box(0, 0) == (0, 0, size - 1, size - 1)


def test_receptive_field_boxes_at_32_px():
    r7 = geometry.receptive_fields(32)["r7"]
    assert r7.box(0, 0) == (0, 0, 7, 7)
    assert r7.box(1, 2) == (4, 8, 11, 15)
    assert r7.box(6, 6) == (24, 24, 31, 31)  # the last location ends exactly at the border
    assert r7.centre(0, 0) == (3.5, 3.5)
    r5 = geometry.receptive_fields(32)["r5"]
    assert r5.box(4, 0) == (16, 0, 31, 15)
    with pytest.raises(IndexError, match="7x7"):
        r7.box(7, 0)
    # At 128 px the reflect-padded stem looks past the border: boxes are clipped to the image.
    r7 = geometry.receptive_fields(128)["r7"]
    assert r7.box(0, 6) == (0, 94, 32, 127)


def test_receptive_fields_do_not_depend_on_the_widths():
    wide = Encoder(32, ndf=16, n_rkhs=64, n_depth=3)
    assert geometry.receptive_fields(32, wide) == geometry.receptive_fields(32)
    with pytest.raises(ValueError, match="32 px"):
        geometry.receptive_fields(64, wide)


def test_conv_geometry_walks_the_layer_stack_in_order():
    encoder = Encoder(128, ndf=1, n_rkhs=8, n_depth=1)
    stem = geometry.conv_geometry(encoder.to_r7)[:2]
    assert stem == [(5, 2, 2), (3, 1, 0)]
    assert all(k == 1 and s == 1 for k, s, _ in geometry.conv_geometry(encoder.head7))
    with pytest.raises(ValueError, match="square"):
        geometry.conv_geometry(torch.nn.Conv2d(1, 1, (3, 1)))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_gradients_stay_inside_the_computed_receptive_field(size):
    """Empirical check: one location's gradient w.r.t. the input is nonzero exactly on its computed box."""
    fields = geometry.receptive_fields(size)
    encoder = geometry.perturbed_encoder(size, seed=1)
    for name, loc in (("r7", (1, 2)), ("r7", (6, 6)), ("r5", (3, 0))):
        grad = geometry.gradient_footprint(encoder, name, *loc, seed=2)
        box = fields[name].box(*loc)
        top, left, bottom, right = box
        inside = np.zeros_like(grad, dtype=bool)
        inside[top:bottom + 1, left:right + 1] = True
        assert not grad[~inside].any(), f"{name}{loc} depends on pixels outside {box}"
        assert geometry.nonzero_box(grad) == box, f"{name}{loc}: the gradient does not reach the edges of {box}"
    grad = geometry.gradient_footprint(encoder, "r1", 0, 0)
    assert geometry.nonzero_box(grad) == (0, 0, size - 1, size - 1)


def test_nonzero_box_refuses_an_all_zero_array():
    assert geometry.nonzero_box(np.eye(3)) == (0, 0, 2, 2)
    with pytest.raises(ValueError):
        geometry.nonzero_box(np.zeros((3, 3)))
