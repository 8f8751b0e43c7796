"""Tests of the procedural Shapes data set (amdim_lib.data.shapes)."""

import warnings

import numpy as np
import pytest
from PIL import Image

from amdim_lib.data.shapes import SHAPE_CLASSES, Shapes, render_shape


def _pixels(image):
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def train_1000():
    """The first 1,000 training items at 32 px, rendered once for several tests."""
    ds = Shapes("train", image_size=32, size=1000)
    items = [ds[i] for i in range(len(ds))]
    images = np.stack([_pixels(im) for im, _, _ in items])
    labels = np.array([label for _, label, _ in items])
    masks = np.stack([mask for _, _, mask in items])
    return ds, images, labels, masks


def test_classes_and_length():
    ds = Shapes("train", size=123)
    assert len(ds) == 123
    assert ds.classes == SHAPE_CLASSES
    assert len(SHAPE_CLASSES) == 10 and len(set(SHAPE_CLASSES)) == 10
    assert len(ds.targets) == 123
    assert len(Shapes("train")) == 10_000
    assert len(Shapes("test")) == 2_000


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_item_types_and_shapes(image_size):
    ds = Shapes("test", image_size=image_size, size=20)
    for i in range(len(ds)):
        image, label, mask = ds[i]
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB"
        assert image.size == (image_size, image_size)
        assert isinstance(label, int) and 0 <= label < 10
        assert label == ds.targets[i]
        assert isinstance(mask, np.ndarray)
        assert mask.dtype == np.bool_
        assert mask.shape == (image_size, image_size)
        assert mask.any() and not mask.all()


def test_determinism():
    a = Shapes("train", size=50, seed=3)
    b = Shapes("train", size=50, seed=3)
    for i in (0, 7, 49):
        im1, l1, m1 = a[i]
        im2, l2, m2 = a[i]
        im3, l3, m3 = b[i]
        assert np.array_equal(_pixels(im1), _pixels(im2)) and np.array_equal(m1, m2) and l1 == l2
        assert np.array_equal(_pixels(im1), _pixels(im3)) and np.array_equal(m1, m3) and l1 == l3
    assert a.targets == b.targets


def test_index_does_not_depend_on_length():
    short, long = Shapes("train", size=15), Shapes("train", size=500)
    assert short.targets == long.targets[:15]
    assert np.array_equal(_pixels(short[13][0]), _pixels(long[13][0]))


def test_different_seed_differs():
    a, b = Shapes("train", size=20, seed=0), Shapes("train", size=20, seed=1)
    assert a.targets != b.targets
    for i in range(20):
        assert not np.array_equal(_pixels(a[i][0]), _pixels(b[i][0]))


def test_train_and_test_disjoint():
    train, test = Shapes("train", size=200), Shapes("test", size=200)
    train_images = {_pixels(train[i][0]).tobytes() for i in range(200)}
    test_images = {_pixels(test[i][0]).tobytes() for i in range(200)}
    assert len(train_images) == 200 and len(test_images) == 200
    assert not train_images & test_images


def test_same_scene_at_every_size():
    # Scene parameters are drawn before any size-dependent randomness, so the
    # object covers the same relative region at every resolution.
    small, large = Shapes("train", 32, size=10), Shapes("train", 128, size=10)
    for i in range(10):
        m32 = small[i][2]
        m128 = large[i][2].reshape(32, 4, 32, 4).mean(axis=(1, 3))
        assert np.abs(m32.mean() - m128.mean()) < 0.02
        assert np.mean(m32 != (m128 >= 0.5)) < 0.05


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"32.*64.*128"):
        Shapes(image_size=48)
    with pytest.raises(ValueError, match=r"test.*train"):
        Shapes(split="val")
    ds = Shapes("test", size=10)
    for bad in (-1, 10, 1000):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(ValueError):
        render_shape(10, 32, (16, 16), 8, 0.0)


def test_labels_balanced():
    ds = Shapes("train", size=1000)
    counts = np.bincount(ds.targets, minlength=10)
    assert counts.sum() == 1000
    assert np.all(counts >= 80) and np.all(counts <= 120), counts
    # Not simply index % 10.
    assert ds.targets[:10] != list(range(10))


def test_mask_fraction_plausible(train_1000):
    _, _, labels, masks = train_1000
    fraction = masks.mean(axis=(1, 2))
    assert 0.03 < fraction.mean() < 0.60
    assert fraction.min() > 0.01
    # The object's area is similar for every class, so pixel count is a weak cue.
    per_class = np.array([fraction[labels == c].mean() for c in range(10)])
    assert per_class.max() < 2.0 * per_class.min(), per_class


def test_mask_matches_object_colour(train_1000):
    # The object is painted last, so the mask's interior (away from the anti-aliased
    # edge) has the object's smooth colour: neighbouring mask pixels are similar.
    _, images, _, masks = train_1000
    img = images[:100].astype(np.float32)
    m = masks[:100]
    inner = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    centre = img[:, 1:-1, 1:-1]
    right = img[:, 1:-1, 2:]
    assert np.abs(centre - right)[inner].mean() < 8.0


def test_colour_carries_no_label_information(train_1000):
    _, images, labels, masks = train_1000
    object_rgb = np.stack([img[m].mean(axis=0) for img, m in zip(images.astype(np.float32) / 255, masks)])
    global_mean = object_rgb.mean(axis=0)
    for c in range(10):
        deviation = np.abs(object_rgb[labels == c].mean(axis=0) - global_mean)
        # About 100 uniform-ish colours per class: the standard error is ~0.03.
        assert deviation.max() < 0.1, (SHAPE_CLASSES[c], deviation)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        accuracy = cross_val_score(LogisticRegression(max_iter=1000), object_rgb, labels, cv=5).mean()
    assert accuracy < 0.2


def test_position_carries_no_label_information(train_1000):
    _, _, labels, masks = train_1000
    ys, xs = np.mgrid[0:32, 0:32]
    area = masks.sum(axis=(1, 2))
    centre = np.stack([(masks * xs).sum(axis=(1, 2)) / area, (masks * ys).sum(axis=(1, 2)) / area], axis=1)
    overall = centre.mean(axis=0)
    for c in range(10):
        assert np.abs(centre[labels == c].mean(axis=0) - overall).max() < 2.0


def test_a_probe_on_simple_pixel_statistics_stays_near_chance(train_1000):
    # Everything but the outline: the image's colour (mean and spread per channel), its brightness
    # histogram and the object's area. Only the shape may carry the label.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    _, images, labels, masks = train_1000
    pixels = images.reshape(len(images), -1, 3).astype(np.float32) / 255
    brightness = pixels.mean(axis=2)
    histogram = np.stack([np.histogram(b, bins=8, range=(0, 1))[0] for b in brightness]) / brightness.shape[1]
    statistics = np.concatenate([pixels.mean(axis=1), pixels.std(axis=1), histogram,
                                 masks.mean(axis=(1, 2))[:, None]], axis=1)
    with threadpool_limits(limits=1):
        accuracy = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                                   statistics, labels, cv=5).mean()
    assert accuracy < 0.2, accuracy  # chance: 0.1


def test_raw_pixel_linear_probe_is_weak():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    def load(split, n):
        ds = Shapes(split, image_size=32, size=n)
        x = np.stack([_pixels(ds[i][0]).reshape(-1) for i in range(n)]).astype(np.float32) / 255.0
        return x, np.array(ds.targets)

    x_train, y_train = load("train", 2000)
    x_test, y_test = load("test", 500)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    # A regularised probe stopped after 100 iterations: it already fits the training
    # set well beyond chance (it memorises), so more iterations would only add time.
    # One BLAS thread: many threads only slow this small fit down on a busy machine.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=0.01, max_iter=100).fit((x_train - mean) / std, y_train)
    assert clf.score((x_train - mean) / std, y_train) > 0.3
    accuracy = clf.score((x_test - mean) / std, y_test)
    assert 0.05 < accuracy < 0.45


def test_distractors_flag_keeps_the_scene():
    # Distractor parameters are always drawn, so switching them off changes only
    # the distractor pixels: the object, its mask and the label stay the same.
    with_d, without = Shapes("train", size=30), Shapes("train", size=30, distractors=False)
    assert with_d.targets == without.targets
    changed, agree = 0, []
    for i in range(30):
        im1, _, m1 = with_d[i]
        im2, _, m2 = without[i]
        assert np.array_equal(m1, m2)
        # Inside the mask the object (painted last) hides the distractors, except
        # for a few partly covered pixels along thin parts and corners.
        inner = m1[1:-1, 1:-1] & m1[:-2, 1:-1] & m1[2:, 1:-1] & m1[1:-1, :-2] & m1[1:-1, 2:]
        same = np.all(_pixels(im1)[1:-1, 1:-1] == _pixels(im2)[1:-1, 1:-1], axis=-1)[inner]
        assert same.mean() > 0.8
        agree.append(same)
        changed += not np.array_equal(_pixels(im1), _pixels(im2))
    assert np.concatenate(agree).mean() > 0.97
    assert changed > 10
