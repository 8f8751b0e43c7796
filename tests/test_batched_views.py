"""Batched views (amdim_lib.data.batched_views) against torchvision's per-image transforms, op by op."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from amdim_lib.data import batched_views as bv
from amdim_lib.run.presets import Config, get_config
from amdim_lib.run.build import build_data
from amdim_lib.core.views import NORMALISATION, ViewPair, eval_transform

TV_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _images(n, size, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("step", range(4))
def test_each_colour_step_is_torchvisions(step):
    x = _images(12, 16)
    x[0] = 0.5  # a grey image: hue and saturation leave it alone
    factors = torch.linspace(-0.5, 0.5, 12) if step == 3 else torch.linspace(0.6, 1.4, 12)
    ours = bv.ADJUSTMENTS[step](x.clone(), factors.view(-1, 1, 1, 1))
    theirs = torch.stack([TV_ADJUST[step](x[i], float(factors[i])) for i in range(12)])
    assert torch.allclose(ours, theirs, atol=1e-5)
    if step < 3:  # factor 1 is exactly the identity
        assert torch.equal(bv.ADJUSTMENTS[step](x.clone(), torch.ones(12, 1, 1, 1)), x)


def _reference_cifar(source: torch.Tensor, u: torch.Tensor, views: bv.BatchedViews):
    """One image's two views from its uniforms, with torchvision's functional ops, step by step."""
    x = source.float() / 255
    if u[0] < 0.5:
        x = TF.hflip(x)
    mean, std = NORMALISATION["default"]
    out = []
    for v in range(2):
        w = u[1 + v * bv.VIEW_DRAWS:1 + (v + 1) * bv.VIEW_DRAWS]
        pad = views.pad
        i, j = (int(w[1] * (2 * pad + 1)), int(w[2] * (2 * pad + 1))) if w[0] < views.p_translate else (pad, pad)
        y = TF.crop(TF.pad(x, pad, padding_mode="reflect"), i, j, views.image_size, views.image_size)
        jit = w[bv.GEOMETRY_DRAWS:bv.GEOMETRY_DRAWS + bv.JITTER_DRAWS]
        if jit[0] < views.p_jitter:
            factors = [1 + views.jitter * (2 * float(jit[k]) - 1) for k in (1, 2, 3)] + [views.hue * (2 * float(jit[4]) - 1)]
            for step in jit[5:9].argsort().tolist():
                y = TV_ADJUST[step](y, factors[step])
        if w[-1] < views.p_gray:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        out.append(TF.normalize(y, mean, std))
    return out


def test_cifar_policy_matches_torchvision_image_by_image():
    views = bv.BatchedViews("cifar", 32)
    sources = (_images(40, 32, seed=1) * 255).to(torch.uint8)
    u = torch.rand(40, bv.N_UNIFORMS, generator=torch.Generator().manual_seed(2))
    x1, x2 = views.finish(sources, u)
    assert x1.shape == x2.shape == (40, 3, 32, 32)
    for k in range(40):
        r1, r2 = _reference_cifar(sources[k], u[k], views)
        assert torch.allclose(x1[k], r1, atol=1e-4) and torch.allclose(x2[k], r2, atol=1e-4), k
    # Every branch was exercised: flips, translations, jitter, grayscale, and their absence.
    view1 = u[:, 1:1 + bv.VIEW_DRAWS]
    for column, p in ((0, 0.5),):
        assert (u[:, column] < p).any() and (u[:, column] >= p).any()
    for column, p in ((0, views.p_translate), (bv.GEOMETRY_DRAWS, views.p_jitter), (-1, views.p_gray)):
        assert (view1[:, column] < p).any() and (view1[:, column] >= p).any()


def _reference_boxes(u: torch.Tensor, side: int, scale, ratio):
    """torchvision's RandomResizedCrop.get_params, its random draws replaced by the uniforms."""
    for attempt in range(bv.ATTEMPTS):
        area = side * side * (scale[0] + (scale[1] - scale[0]) * float(u[attempt]))
        log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * float(u[bv.ATTEMPTS + attempt])
        aspect = math.exp(log_ratio)
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= side and 0 < h <= side:
            i = int(float(u[2 * bv.ATTEMPTS]) * (side - h + 1))
            j = int(float(u[2 * bv.ATTEMPTS + 1]) * (side - w + 1))
            return i, j, h, w
    return 0, 0, side, side


def test_resized_crop_boxes_and_pixels_follow_torchvision():
    u = torch.rand(200, bv.GEOMETRY_DRAWS - 1, generator=torch.Generator().manual_seed(3))
    u[0, :2 * bv.ATTEMPTS] = torch.tensor([1.0] * bv.ATTEMPTS + [0.0] * bv.ATTEMPTS)  # no attempt fits: whole image
    boxes = bv.resized_crop_boxes(u, 96, (0.3, 1.0), (0.7, 1.4))
    assert [tuple(int(v) for v in b) for b in boxes] == [_reference_boxes(row, 96, (0.3, 1.0), (0.7, 1.4)) for row in u]
    assert tuple(boxes[0].tolist()) == (0, 0, 96, 96)
    x = _images(8, 96)
    ours = bv.resample(x, boxes[:8], 64, "bicubic")
    theirs = torch.stack([TF.resized_crop(x[k], *[int(v) for v in boxes[k]], [64, 64], TF.InterpolationMode.BICUBIC,
                                          antialias=False) for k in range(8)])
    # Inside the box the samples agree; at its edge ours read the real pixels beyond it, torchvision repeats the edge.
    assert torch.allclose(ours[..., 3:-3, 3:-3], theirs[..., 3:-3, 3:-3], atol=1e-4)


def _pil(seed, size=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_an_items_views_do_not_depend_on_its_batch():
    base = [(_pil(i), i % 3) for i in range(6)]
    pairs = ViewPair(base, bv.BatchedViews("cifar", 32), seed=5)
    collate = torch.utils.data.default_collate
    cpu = torch.device("cpu")
    whole = pairs.views_on(collate([pairs[(1, i)] for i in range(6)]), cpu)
    alone = pairs.views_on(collate([pairs[(1, 4)]]), cpu)
    assert torch.allclose(whole[0][4], alone[0][0], atol=1e-6) and torch.allclose(whole[1][4], alone[1][0], atol=1e-6)
    assert whole[2].tolist() == [0, 1, 2, 0, 1, 2]
    assert not torch.allclose(whole[0][4], pairs.views_on(collate([pairs[(2, 4)]]), cpu)[0][0]), "another epoch"


@pytest.mark.parametrize("level", ["none", "flip", "crop"])
def test_weaker_levels_leave_out_what_they_should(level):
    image = _pil(0)
    views = bv.BatchedViews("cifar", 32, level=level)
    plain = eval_transform("cifar", 32)(image)
    seen = set()
    for seed in range(12):
        source, u = views.item(image, seed)
        x1, x2 = (x[0] for x in views.finish(source[None], u[None]))
        if level == "crop":  # translations only: the colours of the view are the image's own
            assert set(np.unique(x1.numpy().round(5))) <= set(np.unique(plain.numpy().round(5)))
            seen.add(torch.equal(x1, x2))
        else:
            assert torch.equal(x1, x2)
            assert torch.allclose(x1, plain, atol=1e-6) or torch.allclose(x1, plain.flip(-1), atol=1e-6)
            seen.add(torch.allclose(x1, plain, atol=1e-6))
    # none: never flipped; flip: both ways; crop: the two views are usually cut at different offsets
    assert seen == {True} if level == "none" else seen == {True, False} if level == "flip" else False in seen


def test_configuration_and_data_use_batched_views_where_they_can():
    config = get_config("shapes", "smoke")
    assert config.batch_views
    pairs, _, _ = build_data(config)
    source, u, label = pairs[(0, 0)]
    assert source.dtype == torch.uint8 and source.shape == (3, 32, 32) and u.shape == (bv.N_UNIFORMS,)
    assert not get_config("imagenet", "paper").batch_views, "ImageNet photographs need per-image crops"
    with pytest.raises(ValueError, match="batch_views=False"):
        Config(policy="imagenet-randaugment", image_size=128, n_rkhs=2048)
    assert bv.source_size("stl10", 64) == 96 and bv.source_size("cifar", 32) == 32
    stl = bv.BatchedViews("stl10", 64, normalise="stl10")
    source, u = stl.item(_pil(1, size=96), 0)
    x1, x2 = stl.finish(torch.stack([source] * 3), torch.rand(3, bv.N_UNIFORMS))
    assert x1.shape == x2.shape == (3, 3, 64, 64) and torch.isfinite(x1).all() and not torch.allclose(x1, x2)


def test_both_ways_of_jittering_agree():
    views = bv.BatchedViews("cifar", 32)
    x = _images(48, 32, seed=4)
    u = torch.rand(48, bv.JITTER_DRAWS, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(views._jitter(x, u, masked=False), views._jitter(x, u, masked=True), atol=1e-6)


def test_an_items_draws_ignore_and_keep_the_global_generator():
    pairs = ViewPair([(_pil(i), 0) for i in range(3)], bv.BatchedViews("cifar", 32), seed=5)
    torch.manual_seed(1)
    first = pairs[(1, 2)][1]
    state = torch.get_rng_state()
    torch.rand(10)  # move the global generator: the item must not change
    again = pairs[(1, 2)][1]
    assert torch.equal(first, again) and not torch.equal(first, pairs[(2, 2)][1])
    torch.manual_seed(1)
    pairs[(1, 2)]
    assert torch.equal(torch.get_rng_state(), state), "drawing an item's uniforms moved the global generator"


class _Counting(torch.utils.data.Dataset):
    """Images that count how often they are read."""

    def __init__(self, n):
        self.reads, self.n = [0] * n, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        self.reads[index] += 1
        return _pil(index), index % 3


def test_batched_items_read_each_image_once_and_stay_the_same():
    base = _Counting(5)
    pairs = ViewPair(base, bv.BatchedViews("cifar", 32), seed=2)
    first = [pairs[(0, i)] for i in range(5)]
    first[1][0].zero_()  # what a caller does to an item must not reach the cache
    later = [pairs[(e, i)] for e in (1, 2) for i in range(5)]
    assert base.reads == [1] * 5, "later epochs must reuse the kept source images"
    together = pairs.__getitems__([(3, i) for i in (4, 0, 2)])  # what a DataLoader asks for a batch
    for (source, u, label), i in zip(together, (4, 0, 2)):
        alone = pairs[(3, i)]
        assert torch.equal(source, alone[0]) and torch.equal(u, alone[1]) and label == alone[2]
    for i, item in enumerate(later[:5]):
        fresh = bv.BatchedViews("cifar", 32).item(_pil(i), 0)[0]
        assert torch.equal(item[0], fresh) and item[2] == i % 3
        assert not torch.equal(item[1], first[i][1]), "each epoch draws its own uniforms"
    big = ViewPair(_Counting(5), bv.BatchedViews("cifar", 32))
    big.SOURCE_CACHE_BYTES = 4 * 3 * 32 * 32  # the split does not fit: every epoch reads again
    [big[(e, i)] for e in (0, 1) for i in range(5)]
    assert big.base.reads == [2] * 5
