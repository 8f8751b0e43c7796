"""Data sets by name: the embedded Shapes set (the default) and any class-folder tree of images.

Every data set here yields items whose first two entries are (PIL image, int label); views and
transforms are applied by the wrappers in `amdim_lib.views`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder

from .shapes import Shapes

DATASETS = ("shapes", "folder")

FOLDER_LAYOUT = """expected layout (one sub-folder per class, the same classes in both splits):
    {root}/train/<class>/<image>.jpg|png|...
    {root}/test/<class>/<image>.jpg|png|...   (a folder named 'val' is accepted for the test split)"""


BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


class CheckedImageFolder(ImageFolder):
    """ImageFolder whose unreadable files fail with the file's path, or are skipped and counted.

    skip_bad=True verifies every file once when the data set is built (slow for very large trees)
    and leaves the unreadable ones out; `skipped` lists them.
    """

    def __init__(self, root: str, skip_bad: bool = False):
        super().__init__(root)
        self.skipped: list[str] = []
        if skip_bad:
            good = []
            for path, label in self.samples:
                try:
                    with Image.open(path) as image:
                        image.verify()
                    good.append((path, label))
                except BAD_IMAGE_ERRORS:
                    self.skipped.append(path)
            if self.skipped:
                warnings.warn(f"skipped {len(self.skipped)} unreadable image file(s) under {root}, "
                              f"e.g. {self.skipped[0]}", stacklevel=2)
            self.samples = self.imgs = good
            self.targets = [label for _, label in good]
            if not good:
                raise FileNotFoundError(f"no readable images under {root}")

    def __getitem__(self, index):
        path = self.samples[index][0]
        try:
            return super().__getitem__(index)
        except BAD_IMAGE_ERRORS as error:
            raise ValueError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace the "
                             "file, or skip unreadable files with skip_bad_images=True (--set skip_bad_images=True)") from None


def _folder_split(root: Path, split: str, skip_bad: bool = False) -> ImageFolder:
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    for path in candidates:
        if path.is_dir():
            try:
                return CheckedImageFolder(str(path), skip_bad)
            except (FileNotFoundError, RuntimeError) as error:  # empty tree or no image files
                raise FileNotFoundError(f"no usable images under {path}: {error}\n{FOLDER_LAYOUT.format(root=root)}") from None
    raise FileNotFoundError(f"image folder data set: no '{split}' split under {root}\n{FOLDER_LAYOUT.format(root=root)}\n"
                            "Pass the root with --data-dir (notebooks: data_dir=...).")


def build_dataset(name: str, split: str, image_size: int = 32, data_dir: str | Path | None = None,
                  size: int | None = None, seed: int = 0, skip_bad_images: bool = False):
    """The `split` ('train' or 'test') of data set `name`.

    shapes: procedural, no files; `size` images, deterministic from `seed`.
    folder: `data_dir/train/<class>/*` and `data_dir/test/<class>/*` (torchvision ImageFolder); an unreadable
    file raises an error naming it, or is skipped with `skip_bad_images`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "shapes":
        return Shapes(split=split, image_size=image_size, size=size, seed=seed)
    if name == "folder":
        if data_dir is None:
            raise ValueError("the 'folder' data set needs data_dir (--data-dir PATH)\n" + FOLDER_LAYOUT.format(root="PATH"))
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder data set: {root} does not exist\n{FOLDER_LAYOUT.format(root=root)}")
        return _folder_split(root, split, skip_bad_images)
    raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")


def num_classes(dataset) -> int:
    return len(dataset.classes)
