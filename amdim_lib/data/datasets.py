"""Data sets by name: the embedded Shapes set (the default), the paper's data sets, and any class-folder tree.

Every data set here yields items whose first two entries are (PIL image, int label); views and
transforms are applied by the wrappers in `amdim_lib.core.views`.

| name      | read by                                 | splits (train / test)              | classes |
|-----------|-----------------------------------------|------------------------------------|---------|
| shapes    | `amdim_lib.data.shapes` (procedural)         | generated from the seed            | 10      |
| folder    | ImageFolder: `<root>/train`, `<root>/test` (or `val`) | as found            | as found |
| cifar10   | torchvision CIFAR10 (python pickles)    | 50,000 / 10,000                    | 10      |
| cifar100  | torchvision CIFAR100 (python pickles)   | 50,000 / 10,000                    | 100     |
| stl10     | torchvision STL10 (binaries)            | 5,000 labelled (+100,000 unlabelled) / 8,000 | 10 |
| imagenet  | ImageFolder (ILSVRC-2012 class folders) | 1.28 M / 50,000 (the val split)    | 1000    |
| places205 | ImageFolder, or Places205's split lists | 2.45 M / 20,500 (the val split)    | 205     |

Where the files live: `data_dir`, else `$AMDIM_DATA/<name>`, else `data/<name>` in the repository
(see `default_root`). Nothing is downloaded unless asked (`download=True`, `--download`, or
`python -m amdim_lib download --dataset NAME`); a missing data set raises FileNotFoundError naming
the data set, the root searched, the expected layout and the command that fetches it.

STL-10: self-supervised training reads the split `self_supervised_split("stl10")` = 'train+unlabeled',
whose 100,000 unlabelled images carry label -1 (the training loop keeps them out of the probes' loss);
probes train on 'train' (labelled) and are tested on 'test'.
"""

from __future__ import annotations

import os
import struct
import tarfile
import warnings
from dataclasses import dataclass
from typing import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import CIFAR10, CIFAR100, STL10, ImageFolder, ImageNet
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from .shapes import Shapes

DATASETS = ("shapes", "folder", "cifar10", "cifar100", "stl10", "imagenet", "places205")
SPLITS = ("train", "test", "train+unlabeled")
NAMES = {"shapes": "Shapes", "folder": "image folder", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
         "stl10": "STL-10", "imagenet": "ImageNet (ILSVRC-2012)", "places205": "Places205"}
EXPECTED_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet": 1000, "places205": 205}
DATA_ENV = "AMDIM_DATA"  # a directory holding <name>/ folders, instead of the repository's data/

FOLDER_LAYOUT = """expected layout (one sub-folder per class, the same classes in both splits):
    {root}/train/<class>/<image>.jpg|png|...
    {root}/test/<class>/<image>.jpg|png|...   (a folder named 'val' is accepted for the test split)"""


# What PIL raises for a damaged, foreign or oversized file: its decoders use many exception types,
# and a header claiming billions of pixels (a decompression bomb) raises DecompressionBombError.
BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                    ZeroDivisionError, struct.error, MemoryError, Image.DecompressionBombError)


class UnreadableImageError(ValueError):
    """An image file that cannot be read; the message names it and what to do.

    Raised in a DataLoader worker, it reaches the main process re-created from the worker's whole
    traceback as its message: the message is cut back to the line that names the file."""

    def __init__(self, message: str):
        if "Traceback (most recent call last)" in message:
            last = message.strip().splitlines()[-1]
            message = f"{last.split(': ', 1)[-1]} (in a data-loading worker)"
        super().__init__(message)


def _bad_image(path, error) -> UnreadableImageError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return UnreadableImageError(f"cannot read image {path} ({type(error).__name__}: {detail}); remove or replace the "
                                "file, or skip unreadable files with skip_bad_images=True (--set skip_bad_images=True)")


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # 16-bit grey: PNG and TIFF files of scanners, microscopes
_UNKNOWN_RANGE = {"I": "32-bit integer", "F": "floating-point"}


def rgb_image(path) -> Image.Image:
    """An image file as 8-bit RGB. 16-bit grey is scaled to 8 bits (PIL's own conversion clips it at 255:
    a 16-bit image came out nearly white); 1-bit, grey, palette, alpha and CMYK images are converted
    as PIL does. 32-bit integer and float pixels (PIL modes I and F) are refused by name: their range is
    not in the file, so any conversion could be silently wrong."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    if image.mode in _SIXTEEN_BIT:
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    elif image.mode in _UNKNOWN_RANGE:
        raise ValueError(f"it holds {_UNKNOWN_RANGE[image.mode]} pixels (PIL mode {image.mode}) of unknown range: convert "
                         "it to an 8- or 16-bit image")
    return image.convert("RGB")


def _verified(samples: list, root) -> tuple[list, list[str]]:
    """(readable samples, paths of unreadable ones), checking every file once."""
    good, bad = [], []
    for path, label in samples:
        try:
            with Image.open(path) as image:
                image.verify()
                if image.mode in _UNKNOWN_RANGE:
                    raise ValueError(image.mode)
            good.append((path, label))
        except BAD_IMAGE_ERRORS:
            bad.append(path)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image file(s) under {root}, e.g. {bad[0]}", stacklevel=3)
    if not good:
        raise FileNotFoundError(f"no readable images under {root}")
    return good, bad


class CheckedImageFolder(ImageFolder):
    """ImageFolder whose unreadable files fail with the file's path, or are skipped and counted.

    skip_bad=True verifies every file once when the data set is built (slow for very large trees)
    and leaves the unreadable ones out; `skipped` lists them.
    """

    def __init__(self, root: str, skip_bad: bool = False):
        root = os.path.expanduser(root)  # (as ImageFolder does, so that every path lies below it)
        super().__init__(root, loader=rgb_image, is_valid_file=lambda path: _is_visible_image(path, root))
        self.skipped: list[str] = []
        if skip_bad:
            good, self.skipped = _verified(self.samples, root)
            self.samples = self.imgs = good
            self.targets = [label for _, label in good]

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """(path, label) of every image, in torchvision's order, except that folder links inside a class
        folder are not followed (a class folder may itself be a link): a link loop would list the same
        images dozens of times. The links left out are named in a warning."""
        samples, links, empty = [], [], []
        for name in sorted(class_to_idx):
            found = len(samples)
            for folder, subfolders, files in sorted(os.walk(os.path.join(directory, name), followlinks=False)):
                links += [os.path.join(folder, d) for d in subfolders if os.path.islink(os.path.join(folder, d))]
                samples += [(os.path.join(folder, f), class_to_idx[name]) for f in sorted(files)
                            if is_valid_file(os.path.join(folder, f))]
            if len(samples) == found:
                empty.append(name)
        if links:
            warnings.warn(f"{directory}: {len(links)} folder link(s) inside class folders not followed, e.g. {links[0]}; "
                          "copy or move those images into the class folder to use them", stacklevel=2)
        if empty and not allow_empty:
            raise FileNotFoundError(f"{len(empty)} class folder(s) of {directory} hold no image: {_few(set(empty))}")
        return samples

    def find_classes(self, directory):
        """Class folders, hidden ones (.ipynb_checkpoints, .DS_Store...) left out."""
        classes = class_folders(Path(directory))
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {name: index for index, name in enumerate(classes)}

    def __getitem__(self, index):
        path = self.samples[index][0]
        try:
            return super().__getitem__(index)
        except BAD_IMAGE_ERRORS as error:
            raise _bad_image(path, error) from None


def _visible(name: str) -> bool:
    # Hidden entries are made by tools (JupyterLab's .ipynb_checkpoints, macOS's .DS_Store), not by users.
    return not name.startswith(".")


def _is_visible_image(path: str, root: str) -> bool:
    """An image file (by extension) with no hidden folder on its way from `root`."""
    return has_file_allowed_extension(path, IMG_EXTENSIONS) and all(
        _visible(part) for part in Path(path).relative_to(root).parts)


def class_folders(path: Path) -> list[str]:
    """The class folders of a split: its visible sub-folders, sorted (the order gives the labels)."""
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and _visible(entry.name))


def check_same_classes(train: Path, test: Path) -> None:
    """Refuse splits whose class folders differ: labels are indices into each split's own sorted
    list, so a class present in one split only would shift every label after it."""
    a, b = set(class_folders(train)), set(class_folders(test))
    if a != b:
        raise ValueError(f"the class folders of {train} and {test} differ (only in {train.name}/: {_few(a - b)}; "
                         f"only in {test.name}/: {_few(b - a)}); labels would not match between the splits: "
                         "give both splits the same class folders")


def shorten(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters for a message, saying how much was left out."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _few(names: set, limit: int = 8) -> str:
    listed = sorted(names)
    return (", ".join(listed[:limit]) + (f" and {len(listed) - limit} more" if len(listed) > limit else "")) or "none"


class ImageList(torch.utils.data.Dataset):
    """Images listed in a split file of `relative/path label` lines (Places205's official split files).

    Class names come from the paths: 'a/abbey/x.jpg' -> 'abbey', 'a/apartment_building/outdoor/x.jpg'
    -> 'apartment_building/outdoor' (the leading one-letter folder is dropped).
    """

    def __init__(self, image_root: str | Path, list_file: str | Path, skip_bad: bool = False):
        self.root = Path(image_root)
        self.samples: list[tuple[str, int]] = []
        names: dict[int, str] = {}
        for number, line in enumerate(Path(list_file).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                relative, label = line.replace(",", " ").rsplit(None, 1)
                label = int(label)
            except ValueError:
                raise ValueError(f"{list_file}, line {number}: expected 'relative/path.jpg label', got {line!r}") from None
            relative = relative.strip().lstrip("/")
            self.samples.append((str(self.root / relative), label))
            parts = Path(relative).parts[:-1]
            names.setdefault(label, "/".join(parts[1:] if len(parts) > 1 and len(parts[0]) == 1 else parts))
        if not self.samples:
            raise FileNotFoundError(f"{list_file} lists no images")
        self.classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
        self.skipped: list[str] = []
        if skip_bad:
            self.samples, self.skipped = _verified(self.samples, self.root)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            return rgb_image(path), label
        except BAD_IMAGE_ERRORS as error:
            raise _bad_image(path, error) from None


class Subset(torch.utils.data.Dataset):
    """A fixed selection of a data set's items that keeps its class names (`classes`)."""

    def __init__(self, base, indices):
        self.base, self.indices, self.classes = base, list(indices), base.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.base[self.indices[index]]


def subset(dataset, size: int | None, seed: int = 0):
    """`size` items drawn without replacement with `seed` (in their original order), or all of them."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(dataset, sorted(order.tolist()))


# ----------------------------------------------------------------------------- where data sets live

def default_root(name: str) -> Path:
    """`$AMDIM_DATA/<name>` when that variable is set, else `data/<name>` in the repository that holds
    this package (found from this file, so it does not depend on the working directory; for an
    installed, non-editable package: `data/<name>` under the working directory)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser() / name
    repository = Path(__file__).resolve().parents[2]
    base = repository if (repository / "pyproject.toml").is_file() else Path.cwd()
    return base / "data" / name


def data_root(name: str, data_dir: str | Path | None = None) -> Path:
    """The root a data set is read from: `data_dir` when given, else `default_root(name)`."""
    return Path(data_dir).expanduser() if data_dir else default_root(name)


def self_supervised_split(name: str) -> str:
    """The training split self-supervised training reads: STL-10's train+unlabeled, else train."""
    return "train+unlabeled" if name == "stl10" else "train"


# ----------------------------------------------------------------------------- torchvision's data sets

class _VerifyOnce:
    """torchvision's md5 check of the data files, done once per process for unchanged files (STL-10's
    are 3 GB: checking them for every split that is built would cost seconds each time)."""

    _verified: set = set()

    def _check_integrity(self) -> bool:
        files = [os.path.join(self.root, self.base_folder, name) for name, _ in self.train_list + self.test_list]
        try:
            key = tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
        except OSError:
            return False
        if key not in _VerifyOnce._verified:
            if not super()._check_integrity():
                return False
            _VerifyOnce._verified.add(key)
        return True


class _CIFAR10(_VerifyOnce, CIFAR10):
    pass


class _CIFAR100(_VerifyOnce, CIFAR100):
    pass


class _STL10(_VerifyOnce, STL10):
    pass


@dataclass(frozen=True)
class _Archive:
    cls: type
    folder: str       # what the official archive unpacks to, under the root
    files: str        # what the folder holds
    download_size: str


TORCHVISION = {
    "cifar10": _Archive(_CIFAR10, "cifar-10-batches-py", "data_batch_1 ... data_batch_5, test_batch, batches.meta "
                        "(python pickles)", "163 MB"),
    "cifar100": _Archive(_CIFAR100, "cifar-100-python", "train, test, meta (python pickles)", "161 MB"),
    "stl10": _Archive(_STL10, "stl10_binary", "train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, "
                      "class_names.txt, fold_indices.txt", "2.6 GB"),
}


def _fetch_command(name: str, root: Path) -> str:
    where = "" if root == default_root(name) else f" --data-dir {root}"
    return f"python -m amdim_lib download --dataset {name}{where}"


def _torchvision_layout(name: str, root: Path) -> str:
    archive = TORCHVISION[name]
    return (f"expected layout (torchvision's, as the official archive unpacks):\n"
            f"    {root}/{archive.folder}/  holding {archive.files}\n"
            f"fetch it ({archive.download_size}) with:\n    {_fetch_command(name, root)}\n"
            f"or add --download to the train command (notebooks: download=True), or point --data-dir "
            f"(notebooks: data_dir=...) at an existing copy")


def _torchvision_split(name: str, root: Path, split: str):
    archive = TORCHVISION[name]
    if not (root / archive.folder).is_dir():
        raise FileNotFoundError(f"{NAMES[name]} not found: searched {root} (no {archive.folder}/ there); "
                                "nothing is downloaded unless asked\n" + _torchvision_layout(name, root))
    kwargs = {"split": split} if name == "stl10" else {"train": split == "train"}
    try:
        return archive.cls(str(root), download=False, **kwargs)
    except RuntimeError as error:  # torchvision: a file is missing or fails its checksum
        raise FileNotFoundError(f"{NAMES[name]} under {root / archive.folder} is incomplete or corrupted ({error}); "
                                "delete that folder and fetch it again\n" + _torchvision_layout(name, root)) from None


# ----------------------------------------------------------------------------- ImageNet and Places205 (folders)

# Sub-folders tried for each split: the standard layout first, then the official AMDIM code's names.
SPLIT_FOLDERS = {
    "imagenet": {"train": ("train", "ILSVRC2012_img_train"), "test": ("val", "test", "ILSVRC2012_img_val")},
    "places205": {"train": ("train", "places205_256_train"), "test": ("val", "test", "places205_256_val")},
}
# Places205 as distributed (imagesPlaces205_resize.tar.gz + trainvalsplit_places205.tar.gz): one tree of
# images, <letter>/<category>/<image>.jpg, and one list file per split with 'relative/path label' lines.
PLACES_IMAGES = ("images256", "data/vision/torralba/deeplearning/images256")
PLACES_LISTS = {"train": ("trainvalsplit_places205/train_places205.csv", "train_places205.csv"),
                "test": ("trainvalsplit_places205/val_places205.csv", "val_places205.csv")}
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")
PLACES_ARCHIVES = ("imagesPlaces205_resize.tar.gz", "trainvalsplit_places205.tar.gz")


def _folder_layout(name: str, root: Path) -> str:
    train, test = SPLIT_FOLDERS[name]["train"], SPLIT_FOLDERS[name]["test"]
    image = "<image>.JPEG" if name == "imagenet" else "<image>.jpg"
    text = (f"expected layout (one sub-folder per class, the same classes in both splits):\n"
            f"    {root}/{train[0]}/<class>/{image}   (or {root}/{train[1]}/<class>/..., the official AMDIM code's name)\n"
            f"    {root}/{test[0]}/<class>/{image}     (or {test[2]}/; the validation split is the test split)")
    if name == "imagenet":
        return text + (f"\nImageNet cannot be downloaded automatically (it needs an account at image-net.org): put "
                       f"{', '.join(IMAGENET_ARCHIVES)} into {root}, then run\n    {_fetch_command(name, root)}\n"
                       "which unpacks them into train/ and val/ class folders (torchvision.datasets.ImageNet; no network)")
    return text + (f"\nor Places205 as distributed: {root}/{PLACES_IMAGES[0]}/<letter>/<category>/<image>.jpg with the "
                   f"split lists {root}/{PLACES_LISTS['train'][0]} and {PLACES_LISTS['test'][0]}\n"
                   f"Places205 cannot be downloaded automatically (a form at places.csail.mit.edu): put "
                   f"{' and '.join(PLACES_ARCHIVES)} into {root}, then run\n    {_fetch_command(name, root)}\n"
                   "which unpacks them (no network)")


def _first(root: Path, candidates) -> Path | None:
    return next((root / c for c in candidates if (root / c).exists()), None)


_WARNED: set = set()


def _check_classes(name: str, data, root: Path, where: Path) -> None:
    """Warn (once per data set root) when the class count is not the data set's."""
    expected = EXPECTED_CLASSES[name]
    if len(data.classes) != expected and (name, str(root)) not in _WARNED:
        _WARNED.add((name, str(root)))
        warnings.warn(f"{NAMES[name]} under {where} has {len(data.classes)} classes, not {expected} (a partial "
                      "copy? any class-folder tree also works as --dataset folder)", stacklevel=4)


def _folder_split(name: str, root: Path, split: str, skip_bad: bool):
    """ImageNet / Places205 from class folders (standard or official names), or Places205's split lists."""
    if not root.is_dir():
        raise FileNotFoundError(f"{NAMES[name]} not found: {root} does not exist\n{_folder_layout(name, root)}")
    path = _first(root, SPLIT_FOLDERS[name][split])
    if path is None and name == "places205":
        images, listed = _first(root, PLACES_IMAGES), _first(root, PLACES_LISTS[split])
        if images is not None and listed is not None:
            data = ImageList(images, listed, skip_bad)
            _check_classes(name, data, root, listed)
            return data
    if path is None:
        raise FileNotFoundError(f"{NAMES[name]}: no '{split}' split under {root} (looked for "
                                f"{', '.join(SPLIT_FOLDERS[name][split])})\n{_folder_layout(name, root)}")
    try:
        data = CheckedImageFolder(str(path), skip_bad)
    except (FileNotFoundError, RuntimeError) as error:  # no class folders (e.g. ImageNet's flat val tar), no images
        raise FileNotFoundError(f"no usable images under {path}: {shorten(error)}\n{_folder_layout(name, root)}") from None
    other = _first(root, SPLIT_FOLDERS[name]["test" if split == "train" else "train"])
    if other is not None and other.is_dir():
        check_same_classes(*((path, other) if split == "train" else (other, path)))
    _check_classes(name, data, root, path)
    return data


# ----------------------------------------------------------------------------- fetching

def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Put data set `name` into its root (see `data_root`) and return the root.

    CIFAR-10/100, STL-10: downloaded by torchvision (network; a no-op when the files are there and intact).
    ImageNet: unpacks the official archives found in the root into train/ and val/ class folders
    (torchvision.datasets.ImageNet; no network, the archives need an image-net.org account).
    Places205: unpacks imagesPlaces205_resize.tar.gz and trainvalsplit_places205.tar.gz found in the root.
    """
    root = data_root(name, data_dir)
    if name in TORCHVISION:
        root.mkdir(parents=True, exist_ok=True)
        cls = TORCHVISION[name].cls
        try:
            cls(str(root), download=True, **({"split": "test"} if name == "stl10" else {"train": False}))
        except OSError as error:
            raise RuntimeError(f"downloading {NAMES[name]} into {root} failed: {error}") from None
        return root
    if name == "imagenet":
        if all(_first(root, SPLIT_FOLDERS[name][s]) for s in ("train", "test")):
            return root
        missing = [f for f in IMAGENET_ARCHIVES if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{NAMES[name]}: {', '.join(missing)} not found in {root}\n{_folder_layout(name, root)}")
        for split in ("train", "val"):
            ImageNet(str(root), split=split)  # parses the archives into <root>/<split>/<wnid>/ once
        return root
    if name == "places205":
        if all(_first(root, SPLIT_FOLDERS[name][s]) for s in ("train", "test")) or (
                _first(root, PLACES_IMAGES) and all(_first(root, PLACES_LISTS[s]) for s in ("train", "test"))):
            return root
        missing = [f for f in PLACES_ARCHIVES if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{NAMES[name]}: {', '.join(missing)} not found in {root}\n{_folder_layout(name, root)}")
        for archive in PLACES_ARCHIVES:
            with tarfile.open(root / archive) as tar:
                tar.extractall(root, filter="data")
        return root
    raise ValueError(f"{name!r} is not fetched: choose one of {sorted(TORCHVISION) + ['imagenet', 'places205']}")


# ----------------------------------------------------------------------------- the entry point

def _plain_split_path(root: Path, split: str) -> Path | None:
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    return next((path for path in candidates if path.is_dir()), None)


def _plain_folder_split(root: Path, split: str, skip_bad: bool = False) -> ImageFolder:
    path = _plain_split_path(root, split)
    if path is not None:
        other = _plain_split_path(root, "test" if split == "train" else "train")
        if other is not None:
            check_same_classes(*((path, other) if split == "train" else (other, path)))
        try:
            return CheckedImageFolder(str(path), skip_bad)
        except (FileNotFoundError, RuntimeError) as error:  # empty tree or no image files
            raise FileNotFoundError(f"no usable images under {path}: {shorten(error)}\n{FOLDER_LAYOUT.format(root=root)}") from None
    raise FileNotFoundError(f"image folder data set: no '{split}' split under {root}\n{FOLDER_LAYOUT.format(root=root)}\n"
                            "Pass the root with --data-dir (notebooks: data_dir=...).")


def build_dataset(name: str, split: str, image_size: int = 32, data_dir: str | Path | None = None,
                  size: int | None = None, seed: int = 0, skip_bad_images: bool = False, download: bool = False):
    """The `split` ('train', 'test'; STL-10 also 'train+unlabeled') of data set `name`.

    shapes: procedural, no files; `size` images, deterministic from `seed`.
    folder: `data_dir/train/<class>/*` and `data_dir/test/<class>/*` (torchvision ImageFolder).
    cifar10, cifar100, stl10, imagenet, places205: read from `data_root(name, data_dir)`; with
    `download`, a missing data set is fetched first (`fetch`), never otherwise.
    For the data sets on disk, `size` keeps a subset of that many items drawn with `seed` (None: all).
    An unreadable image file raises an error naming it, or is skipped with `skip_bad_images`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test' (STL-10 also 'train+unlabeled'), got {split!r}")
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    if split == "train+unlabeled" and name != "stl10":
        raise ValueError(f"split 'train+unlabeled' exists for STL-10 only, not {name!r}")
    if name == "shapes":
        return Shapes(split=split, image_size=image_size, size=size, seed=seed)
    if name == "folder":
        if data_dir is None:
            raise ValueError("the 'folder' data set needs data_dir (--data-dir PATH)\n" + FOLDER_LAYOUT.format(root="PATH"))
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder data set: {root} does not exist\n{FOLDER_LAYOUT.format(root=root)}")
        return subset(_plain_folder_split(root, split, skip_bad_images), size, seed)
    root = data_root(name, data_dir)
    if download:
        fetch(name, root)
    data = _torchvision_split(name, root, split) if name in TORCHVISION else _folder_split(name, root, split, skip_bad_images)
    return subset(data, size, seed)


def num_classes(dataset) -> int:
    return len(dataset.classes)


def load_photographs(image_size: int, names: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                                               "immunohistochemistry")) -> dict:
    """scikit-image's sample photographs, centre-cropped to a square and resized to `image_size` (PIL)."""
    from skimage import data  # lazy: slow to import; only the sample photographs need it

    out = {}
    for name in names:
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, -1)
        image = Image.fromarray(array[..., :3])
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        out[name] = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.LANCZOS)
    return out


def load_folder_images(root: str | Path, image_size: int, n: int = 6, seed: int = 0) -> dict:
    """Up to n images (PIL, resized to image_size) from an image folder such as <cifar>/test/<class>/*.jpg,
    one class after another; {} when the folder does not exist."""

    root = Path(root)
    if not root.is_dir():
        return {}
    test = root / "test" if (root / "test").is_dir() else root
    classes = [test / name for name in class_folders(test)] or [test]
    files = [sorted(f for f in c.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png") and _visible(f.name))[:50]
             for c in classes]
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(group)) for group in files]
    out = {}
    for number in range(n):  # one class after another, a different image of the class each round
        c, round_ = number % len(files), number // len(files)
        if round_ >= len(files[c]):
            continue
        path = files[c][orders[c][round_]]
        try:
            out[f"{path.parent.name}/{path.stem}"] = rgb_image(path).resize((image_size, image_size), Image.BICUBIC)
        except BAD_IMAGE_ERRORS as error:
            raise _bad_image(path, error) from None
    return out
