"""Unit tests of amdim_lib.ui.widgets (view callbacks and the inspector driven from code)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from amdim_lib.ui import widgets  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny ops: one thread is faster


def _photo(h=96, w=120, seed=0):
    """A smooth random RGB image (uint8), large enough for every policy."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 8, 3))
    return np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))


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
