"""Unit tests of amdim_lib.ui.viz (receptive fields, summaries, figures), amdim_lib.ui.widgets (view callbacks and
the inspector driven from code) and amdim_lib.core.reference (the loop-based objective)."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from amdim_lib.analysis import timing  # noqa: E402
from amdim_lib.core import geometry, reference  # noqa: E402
from amdim_lib.ui import viz, widgets  # noqa: E402
from amdim_lib.core.encoder import Encoder, Features, count_parameters  # noqa: E402
from amdim_lib.core.objectives import amdim_loss, nce_loss, tanh_clip  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run thousands of tiny ops; on a busy two-core machine one intra-op thread is far faster
    than two (which wait at barriers for each other). The results do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _photo(h=96, w=120, seed=0):
    """A smooth random RGB image (uint8), large enough for every policy."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 8, 3))
    return np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))


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


# ----------------------------------------------------------------------------- summaries and figures

def test_encoder_summary_matches_a_real_encoder():
    summary = viz.encoder_summary(32, 8, 64, 2)
    encoder = Encoder(32, 8, 64, 2)
    assert summary["parameters"] == count_parameters(encoder)
    assert summary["r1"] == (64, 1, 1) and summary["r5"] == (64, 5, 5) and summary["r7"] == (64, 7, 7)
    assert summary["local_width"] == 32
    assert viz.encoder_summary(128, 192, 1536, 8)["parameters"] == 208_419_264  # DESIGN.md table, no memory used


def test_positive_negative_gap_and_score_image():
    scores = torch.zeros(3, 3, 4)
    scores[range(3), range(3)] = 2.0
    assert viz.positive_negative_gap(scores) == pytest.approx(2.0)
    image = viz.score_image(torch.arange(18.0).view(3, 3, 2))
    assert image.shape == (3, 6) and image[1, 0] == 6  # row = source, columns = (target image, location)


def test_to_display_inverts_the_normalisation():
    array = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    tensor = (torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5
    assert np.allclose(viz.to_display(tensor), array, atol=1e-6)
    assert viz.to_display(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0


def test_every_figure_renders_without_warnings(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda s=32: rng.random((s, s, 3)).astype(np.float32)  # noqa: E731
    scores = torch.randn(4, 4, 49)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = {
            "pairs": viz.plot_view_pairs({"a": [(img(), img())] * 2, "b": [(img(), img())]}, title="t"),
            "rows": viz.plot_augmentation_rows({"x": [img()] * 3, "y": [img()]}, col_titles=["1", "2", "3"]),
            "rf": viz.plot_receptive_fields({32: img(32), 64: img(64)},
                                            footprints={32: rng.random((32, 32)), 64: rng.random((64, 64))}),
            "scores": viz.plot_score_matrix(scores),
            "tasks": viz.plot_prediction_tasks(img(), img(), 32),
            "tanh": viz.plot_tanh_clip(),
            "hist": viz.plot_score_histograms(scores * 10, {"c=5": tanh_clip(scores * 10, 5.0)}),
            "sweep": viz.plot_scale_sweep([1, 10], {"a": [1.0, 2.0]}, [0.1, 10.0]),
            "loss": viz.plot_loss_curves([{"kind": "train", "step": s, "1t5": 1.0, "1t7": 2.0, "5t5": 3.0} for s in (1, 2)]),
        }
        for name, fig in figures.items():
            assert fig.axes, name
            path = viz.save_figure(fig, tmp_path, name)
            with Image.open(path) as saved:
                assert saved.size[0] > 100
    plt.close("all")
    # The score matrix outlines one positive block per source image.
    from matplotlib.patches import Rectangle
    fig = viz.plot_score_matrix(scores)
    assert sum(isinstance(p, Rectangle) for p in fig.axes[0].patches) == 4
    plt.close("all")


# ----------------------------------------------------------------------------- widgets: callbacks

@pytest.mark.parametrize("policy,size", [("cifar", 32), ("stl10", 64), ("imagenet", 128)])
def test_views_for_draws_reproducible_pairs_at_the_policy_size(policy, size):
    photo = _photo()
    pairs = widgets.views_for(photo, policy, seed=3, n_pairs=3)
    assert len(pairs) == 3
    for a, b in pairs:
        assert a.shape == b.shape == (size, size, 3) and a.dtype == np.float32
        assert 0.0 <= a.min() and a.max() <= 1.0
    assert widgets.mean_view_difference(pairs) > 0.01, "the policy is applied to each view independently"
    again = widgets.views_for(photo, policy, seed=3, n_pairs=2)  # pair k depends only on (seed, k)
    assert all(np.array_equal(x, y) for p, q in zip(pairs, again) for x, y in zip(p, q))
    other = widgets.views_for(photo, policy, seed=4, n_pairs=1)
    assert not np.array_equal(other[0][0], pairs[0][0])


def test_views_for_levels_and_strength():
    photo = _photo()
    none = widgets.views_for(photo, "cifar", level="none", n_pairs=3)
    assert widgets.mean_view_difference(none) == 0.0
    small = _photo(32, 32)  # already at the policy size: no resampling, so a flip is exact
    flip = widgets.views_for(small, "cifar", level="flip", n_pairs=6)
    assert widgets.mean_view_difference(flip) == 0.0
    # The shared flip: some pairs are mirror images of the unflipped view, the others equal to it.
    plain = widgets.views_for(small, "cifar", level="none", n_pairs=1)[0][0]
    mirrored = [np.array_equal(p[0], plain[:, ::-1]) for p in flip]
    assert any(mirrored) and not all(mirrored)
    assert all(m or np.array_equal(p[0], plain) for m, p in zip(mirrored, flip))
    weak = widgets.mean_view_difference(widgets.views_for(photo, "cifar", strength=0.0, n_pairs=4))
    strong = widgets.mean_view_difference(widgets.views_for(photo, "cifar", strength=1.5, n_pairs=4))
    assert weak == 0.0 < strong, "strength 0 switches every random part of the cifar policy off"
    with pytest.raises(ValueError, match="level"):
        widgets.views_for(photo, "cifar", level="heavy")


def test_single_augmentations_show_each_ingredient():
    photo = _photo()
    rows = widgets.single_augmentations(photo, "imagenet", n=3, seed=0)
    assert list(rows) == ["original", "random resized crop", "colour jitter", "grayscale", "flip", "full policy"]
    assert len(rows["colour jitter"]) == 3 and len(rows["original"]) == 1
    original = rows["original"][0]
    assert original.shape == (128, 128, 3)
    gray = rows["grayscale"][0]
    assert np.allclose(gray[..., 0], gray[..., 1]) and not np.allclose(original[..., 0], original[..., 1])
    assert np.array_equal(rows["flip"][0], original[:, ::-1])
    assert all(not np.allclose(x, original) for x in rows["colour jitter"]), "jitter is forced on"
    assert "translate / crop" in widgets.single_augmentations(photo, "cifar", n=1)


# ----------------------------------------------------------------------------- widgets: the inspector

def test_inspector_reacts_to_every_control():
    inspector = widgets.views_inspector({"a": _photo(seed=0), "b": _photo(seed=1)}, n_pairs=2, seed=5)
    assert len(inspector.pairs) == 2 and inspector.pairs[0][0].shape == (32, 32, 3)
    png = inspector.figure.value
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    first = inspector.pairs[0][0]

    inspector.policy.value = "imagenet"
    assert inspector.pairs[0][0].shape == (128, 128, 3)
    assert inspector.figure.value != png

    inspector.n_pairs.value = 3
    assert len(inspector.pairs) == 3

    before = inspector.pairs[0][0]
    inspector.resample.click()
    assert inspector.seed.value == 6
    assert not np.array_equal(inspector.pairs[0][0], before)
    assert np.array_equal(inspector.pairs[0][0], widgets.views_for(_photo(seed=0), "imagenet", seed=6, n_pairs=1)[0][0])

    inspector.image.value = "b"
    assert np.array_equal(inspector.pairs[0][0], widgets.views_for(_photo(seed=1), "imagenet", seed=6, n_pairs=1)[0][0])

    inspector.level.value = "none"
    assert inspector.difference == 0.0 and "0.000" in inspector.status.value

    inspector.level.value = "full"
    assert inspector.difference > 0.05
    inspector.strength.value = 0.0  # every random part off (the crop keeps the whole image)
    assert inspector.difference == 0.0
    inspector.policy.value = "cifar"
    assert inspector.difference == 0.0 and inspector.pairs[0][0].shape == (32, 32, 3)
    assert not np.array_equal(inspector.pairs[0][0], first)  # another image than at the start


def test_inspector_needs_images():
    with pytest.raises(ValueError, match="at least one image"):
        widgets.views_inspector({})


# ----------------------------------------------------------------------------- the loop-based reference

def _features(batch=4, dim=16, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: scale * torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return Features(draw(batch, dim, 1, 1), draw(batch, dim, 5, 5), draw(batch, dim, 7, 7))


@pytest.mark.parametrize("tclip", [20.0, 5.0, None])
def test_slow_nce_loss_agrees_with_the_library(tclip):
    f = _features()
    for src, trg in ((f.r1.flatten(1), f.r5), (f.r1.flatten(1), f.r7), (f.r5[:, :, 2, 3], f.r5)):
        fast, fast_reg = nce_loss(src, trg, tclip)
        slow, slow_reg = reference.slow_nce_loss(src, trg, tclip)
        assert abs(float(fast - slow)) < 1e-5 and abs(float(fast_reg - slow_reg)) < 1e-5


def test_slow_amdim_loss_agrees_with_the_library():
    f1, f2 = _features(seed=1), _features(seed=2)
    fast = amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(7))
    slow = reference.slow_amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(7))
    assert set(fast) == set(slow) == {"1t5", "1t7", "5t5", "reg", "loss"}
    for key in fast:
        assert abs(float(fast[key] - slow[key])) < 1e-5, key
    # A different draw of 5->5 source locations changes only that task.
    other = reference.slow_amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(8))
    assert float(other["1t7"]) == float(slow["1t7"]) and float(other["5t5"]) != float(slow["5t5"])


def test_slow_nce_loss_by_hand():
    # Two images, one location each, D = 1: scores u[i, j] = s_i * t_j.
    src = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    trg = torch.tensor([[[3.0]], [[-1.0]]], dtype=torch.float64)
    loss, reg = reference.slow_nce_loss(src, trg, tclip=None)
    u = torch.tensor([[3.0, -1.0], [6.0, -2.0]], dtype=torch.float64)
    expected = -(torch.log_softmax(u[0], 0)[0] + torch.log_softmax(u[1], 0)[1]) / 2
    assert float(loss) == pytest.approx(float(expected)) and float(reg) == pytest.approx(float(u.pow(2).mean()))


def test_time_call_restores_the_thread_count():
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    seen = []
    result, seconds = timing.time_call(lambda: seen.append(torch.get_num_threads()) or 42, repeats=3)
    assert result == 42 and seen == [1, 1, 1] and seconds >= 0
    assert torch.get_num_threads() == before
