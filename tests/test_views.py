import numpy as np
import pytest
import torch
from PIL import Image

from amdim_lib.core.views import (LEVELS, POLICIES, TwoViews, ViewPair, make_two_views, eval_transform,
                             train_transform)


def _image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("policy,size", [("cifar", 32), ("stl10", 64), ("imagenet", 128)])
def test_policies_give_normalised_tensors_of_the_right_size(policy, size):
    views = make_two_views(policy, size)
    x1, x2 = views(_image(size + 16))  # larger inputs are cropped/resized to the target size
    assert x1.shape == x2.shape == (3, size, size)
    assert not torch.equal(x1, x2), "the policy is applied independently to each view"
    assert eval_transform(policy, size)(_image(size + 16)).shape == (3, size, size)


def test_eval_transform_is_deterministic():
    t = eval_transform("stl10", 64)
    image = _image(96)
    assert torch.equal(t(image), t(image))


def test_flip_is_shared_by_both_views():
    views = make_two_views("cifar", 32, level="flip")  # only the shared flip is random
    image = _image()
    plain = eval_transform("cifar", 32)(image)
    flipped = torch.flip(plain, dims=[2])
    outcomes = set()
    torch.manual_seed(0)
    for _ in range(20):
        x1, x2 = views(image)
        assert torch.equal(x1, x2)
        outcomes.add("flipped" if torch.equal(x1, flipped) else "plain" if torch.equal(x1, plain) else "other")
    assert outcomes == {"flipped", "plain"}


def test_level_none_is_the_identity_and_unknown_names_are_refused():
    views = make_two_views("cifar", 32, level="none")
    assert isinstance(views, TwoViews) and not views.flip
    image = _image()
    assert torch.equal(views(image)[0], eval_transform("cifar", 32)(image))
    with pytest.raises(ValueError, match="full"):
        train_transform("cifar", 32, level="heavy")
    with pytest.raises(ValueError, match="imagenet"):
        train_transform("places", 32)
    assert set(LEVELS) == {"full", "crop", "flip", "none"} and "cifar" in POLICIES


def test_views_are_a_function_of_seed_epoch_and_index():
    base = [(_image(seed=i), i % 3) for i in range(4)]
    pairs = ViewPair(base, make_two_views("cifar", 32), seed=7)
    a = pairs[(0, 2)]
    torch.manual_seed(123)  # the global RNG does not matter
    b = pairs[(0, 2)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == 2
    c = pairs[(1, 2)]
    assert not torch.equal(a[0], c[0]), "another epoch gives other views"
    other_seed = ViewPair(base, make_two_views("cifar", 32), seed=8)[(0, 2)]
    assert not torch.equal(a[0], other_seed[0])


def test_strength_zero_turns_the_photometric_policy_off():
    image = _image()
    transform = train_transform("cifar", 32, strength=0.0)
    assert torch.equal(transform(image), eval_transform("cifar", 32)(image))
