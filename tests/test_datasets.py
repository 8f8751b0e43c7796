import numpy as np
import pytest
from PIL import Image

from amdim_lib.data.datasets import build_dataset, num_classes


def _folder(root, split, classes=("cat", "dog"), per_class=3, size=40):
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")


def test_folder_data_set_reads_class_folders(tmp_path):
    _folder(tmp_path, "train")
    _folder(tmp_path, "val")  # 'val' stands in for the test split
    train = build_dataset("folder", "train", data_dir=tmp_path)
    test = build_dataset("folder", "test", data_dir=tmp_path)
    assert len(train) == len(test) == 6 and num_classes(train) == 2
    image, label = train[0]
    assert image.mode == "RGB" and label == 0


def test_missing_folder_names_the_layout_and_the_switch(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train/<class>/<image>") as info:
        build_dataset("folder", "train", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    with pytest.raises(ValueError, match="--data-dir"):
        build_dataset("folder", "train")
    (tmp_path / "train" / "empty").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no usable images"):
        build_dataset("folder", "train", data_dir=tmp_path)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="shapes"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        build_dataset("shapes", "validation")


def test_shapes_is_the_default_and_needs_no_files():
    data = build_dataset("shapes", "train", size=20)
    image, label, mask = data[3]
    assert image.size == (32, 32) and 0 <= label < 10 and mask.shape == (32, 32)
