"""Views: the augmentations that turn one image into two "views of a shared context".

AMDIM flips the image once (the flip is shared by both views), then applies a random policy twice,
independently. What survives every augmentation (the object's shape, not its colour or exact
position) is what the objective can use to match the views.

Policies (from the paper and its official code):
- cifar    (32 px): translate +-4 px with reflection (p 0.8), colour jitter (p 0.8), grayscale (p 0.25)
- stl10    (64 px): random resized crop (scale 0.3-1, ratio 0.7-1.4, bicubic), jitter, grayscale
- imagenet (128 px): the same crop at 128 px, jitter with less hue, grayscale
- imagenet-randaugment / imagenet-trivialaugment / imagenet-autoaugment: an option for ImageNet (and
  Places205), `Config.policy`. The paper's strongest ImageNet results used a learned policy (the
  ImageNet policy of Fast AutoAugment), worth 1-2 points over the standard one per the official code's
  notes. Those stand-ins are torchvision's RandAugment (2 ops, magnitude 9), TrivialAugmentWide or
  AutoAugment (its ImageNet policy), applied after the crop and before the jitter; they are not the
  Fast AutoAugment policy itself, and `strength` does not scale them.

Randomness: torchvision transforms draw from torch's global generator. `ViewPair` reseeds it per
item from (seed, epoch, index), so an item's views do not depend on worker count or order, and a
resumed run sees exactly the views of an uninterrupted one.

Training runs compute the same policies a batch at a time on the training device by default
(`amdim_lib.data.batched_views`, `Config.batch_views`); the PIL transforms here remain for the
learned-policy options, for ImageNet-sized photographs and for looking at single images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

POLICIES = ("cifar", "stl10", "imagenet")
LEVELS = ("full", "crop", "flip", "none")  # augmentation strength, for ablations

# Per-channel input statistics by data set, the official code's constants; Shapes and image folders of
# unknown origin use 0.5 / 0.5 ("default").
_CIFAR = ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALISATION = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "stl10": ((0.43, 0.42, 0.39), (0.27, 0.26, 0.27)),
    "imagenet": _IMAGENET,
    "places205": _IMAGENET,
    "default": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def normalisation_for(dataset: str) -> str:
    """The NORMALISATION entry that inputs of `dataset` are normalised with."""
    return dataset if dataset in NORMALISATION else "default"


POLICY_FOR_SIZE = {32: "cifar", 64: "stl10", 128: "imagenet"}

# The stronger ImageNet options (see the module docstring): name -> the extra torchvision transform.
STRONG_POLICIES = {
    "imagenet-randaugment": lambda: T.RandAugment(num_ops=2, magnitude=9),
    "imagenet-trivialaugment": lambda: T.TrivialAugmentWide(),
    "imagenet-autoaugment": lambda: T.AutoAugment(T.AutoAugmentPolicy.IMAGENET),
}
VIEW_POLICIES = POLICIES + tuple(STRONG_POLICIES)  # every name `Config.policy` accepts


def resolve_policy(policy: str | None, image_size: int) -> str:
    """The view policy of a run: the configured one, or (None) the one that matches the image size."""
    if policy is None:
        return POLICY_FOR_SIZE[image_size]
    if policy not in VIEW_POLICIES:
        raise ValueError(f"unknown view policy {policy!r}; choose one of {VIEW_POLICIES}")
    return policy


class FitSize:
    """Resize the short side and centre-crop to `size`, skipping images that already fit (the common case)."""

    def __init__(self, size: int, interpolation=T.InterpolationMode.BILINEAR):
        self.size, self.crop = size, T.Compose([T.Resize(size, interpolation=interpolation), T.CenterCrop(size)])

    def __call__(self, image):
        return image if image.size == (self.size, self.size) else self.crop(image)


def policy_parts(policy: str, image_size: int, strength: float):
    """A policy's geometric transform and its photometric transforms, for PIL images."""
    s = strength
    if policy in STRONG_POLICIES:  # the ImageNet policy with a learned-policy-style transform in front
        geometric, photometric = policy_parts("imagenet", image_size, strength)
        return geometric, [STRONG_POLICIES[policy](), *photometric]
    if policy == "cifar":
        pad = round(4 * image_size / 32)  # +-4 px at 32 px
        geometric = T.Compose([FitSize(image_size),
                               T.RandomApply([T.RandomCrop(image_size, padding=pad, padding_mode="reflect")], p=min(1.0, 0.8 * s))])
        jitter = T.ColorJitter(0.4 * s, 0.4 * s, 0.4 * s, min(0.5, 0.2 * s))
    elif policy in ("stl10", "imagenet"):
        low = 1.0 - 0.7 * min(s, 1.0)  # scale 0.3-1 at full strength
        geometric = T.RandomResizedCrop(image_size, scale=(low, 1.0), ratio=(0.7, 1.4),
                                        interpolation=T.InterpolationMode.BICUBIC)
        hue = 0.2 if policy == "stl10" else 0.1
        jitter = T.ColorJitter(0.4 * s, 0.4 * s, 0.4 * s, min(0.5, hue * s))
    else:
        raise ValueError(f"unknown view policy {policy!r}; choose one of {VIEW_POLICIES}")
    photometric = [T.RandomApply([jitter], p=min(1.0, 0.8 * s)), T.RandomGrayscale(p=min(1.0, 0.25 * s))]
    return geometric, photometric


def eval_geometry(policy: str, image_size: int):
    """Test-time geometry: STL-10 resize 70 + centre crop 64, ImageNet 146 -> 128, CIFAR as is."""
    policy = "imagenet" if policy in STRONG_POLICIES else policy
    if policy == "cifar":
        return FitSize(image_size)
    resize = round(image_size * (70 / 64 if policy == "stl10" else 146 / 128))
    return T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)])


def to_tensor(normalise: str = "default") -> T.Compose:
    """PIL image -> float tensor normalised with the statistics named by `normalise`."""
    mean, std = NORMALISATION[normalise]
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def train_transform(policy: str, image_size: int, normalise: str = "default", strength: float = 1.0, level: str = "full"):
    """One view's random transform (PIL image -> normalised tensor), without the shared flip.

    `strength` scales jitter magnitudes and probabilities; `level` keeps the full policy, only its
    geometric part ('crop'), or none of it ('flip' and 'none', which differ in the shared flip).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; choose one of {LEVELS}")
    geometric, photometric = policy_parts(policy, image_size, strength)
    steps = {"full": [geometric, *photometric], "crop": [geometric]}.get(level, [eval_geometry(policy, image_size)])
    return T.Compose([*steps, to_tensor(normalise)])


def eval_transform(policy: str, image_size: int, normalise: str = "default"):
    """Deterministic evaluation transform."""
    return T.Compose([eval_geometry(policy, image_size), to_tensor(normalise)])


@dataclass
class TwoViews:
    """Maps an image to two views: one shared horizontal flip, then `transform` applied twice."""

    transform: T.Compose
    flip: bool = True

    def __call__(self, image):
        if self.flip and torch.rand(()) < 0.5:
            image = TF.hflip(image)
        return self.transform(image), self.transform(image)

    def item(self, image, seed: int):
        """The views of one item, drawn from the global generator seeded with `seed` (restored after)."""
        return with_seed(seed, lambda: self(image))

    def finish(self, x1: torch.Tensor, x2: torch.Tensor):
        """The batch step (see `batched_views.BatchedViews.finish`): nothing is left to do here."""
        return x1, x2


def make_two_views(policy: str, image_size: int, normalise: str = "default", strength: float = 1.0, level: str = "full") -> TwoViews:
    """The two-view augmentation of a policy at an augmentation level ('none' turns the flip off too)."""
    return TwoViews(train_transform(policy, image_size, normalise, strength, level), flip=level != "none")


def with_seed(seed: int, fn):
    """fn() with the global CPU generator seeded with `seed`, the caller's generator state restored after."""
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: torch.manual_seed would also queue a (slow) CUDA seeding call.
        torch.default_generator.manual_seed(seed)
        return fn()


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that is a fixed function of (seed, epoch, index)."""
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % (2**63 - 1)


class ViewPair(torch.utils.data.Dataset):
    """Wraps a labelled data set: item (epoch, index) -> (view1, view2, label), or with batched views
    (`amdim_lib.data.batched_views`) -> (source image, uniforms, label), finished a batch at a time by
    `views_on`.

    Indexed by (epoch, index) pairs (see `amdim_lib.run.train.EpochSampler`) so that the views of an
    item are a fixed function of the run's seed, the epoch and the index.

    With batched views an item's source image is a fixed function of its image, so each is kept after
    its first read (when the whole split's fit in SOURCE_CACHE_BYTES, per process): later epochs then
    neither decode nor render any image, and an item costs only its uniforms.
    """

    SOURCE_CACHE_BYTES = 512 * 2**20

    def __init__(self, base, views, seed: int = 0):
        self.base, self.views, self.seed = base, views, seed
        self._sources, self._labels, self._cache = None, None, True

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = _epoch_index(key)
        seed = item_seed(self.seed, epoch, index)
        if hasattr(self.views, "source"):  # batched views
            source, label = self._source(index)
            return source, self.views.draws(seed), label
        image, label = self.base[index][:2]
        x1, x2 = self.views.item(image, seed)
        return x1, x2, label

    def __getitems__(self, keys):
        """A batch's items (a DataLoader asks for them together): with batched views and every one's
        source image kept, one gather of the kept images instead of an item at a time."""
        keys = [_epoch_index(key) for key in keys]
        indices = [index for _, index in keys]
        if self._labels is None or any(self._labels[i] is None for i in indices):
            return [self[key] for key in keys]
        sources = self._sources[torch.tensor(indices)]
        return [(source, self.views.draws(item_seed(self.seed, *key)), self._labels[key[1]])
                for source, key in zip(sources, keys)]

    def _source(self, index: int):
        """(uint8 source image, label) of an item, from the cache once it has been read."""
        if self._labels is not None and self._labels[index] is not None:
            return self._sources[index].clone(), self._labels[index]  # a copy: the caller may change it
        image, label = self.base[index][:2]
        source = self.views.source(image)
        if self._labels is None and self._cache:  # first item: a cache for the whole split, if it fits
            self._cache = len(self) * source.numel() <= self.SOURCE_CACHE_BYTES
            if self._cache:
                self._sources, self._labels = torch.empty((len(self), *source.shape), dtype=torch.uint8), [None] * len(self)
        if self._labels is not None:
            self._sources[index], self._labels[index] = source, label
        return source, label

    def views_on(self, batch, device: torch.device):
        """A collated batch of items -> (view1, view2, label) on `device`."""
        a, b, label = (t.to(device, non_blocking=True) for t in batch)
        return (*self.views.finish(a, b), label)


def _epoch_index(key) -> tuple[int, int]:
    """A `ViewPair` key, (epoch, index) or a bare index (epoch 0), as (epoch, index)."""
    return key if isinstance(key, tuple) else (0, key)


class Transformed(torch.utils.data.Dataset):
    """Wraps a labelled data set with a deterministic transform: index -> (tensor, label)."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index][:2]
        return self.transform(image), label


def images_to_tensor(images: Mapping[str, object] | Sequence, image_size: int) -> torch.Tensor:
    """PIL images (or (H, W, 3) arrays) -> normalised tensor (B, 3, S, S), resized when needed."""

    fit, to_x = FitSize(image_size), to_tensor()
    items = images.values() if isinstance(images, Mapping) else images
    out = []
    for image in items:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            image = Image.fromarray(array if array.dtype == np.uint8 else (np.clip(array, 0, 1) * 255).astype(np.uint8))
        out.append(to_x(fit(image.convert("RGB"))))
    return torch.stack(out)
