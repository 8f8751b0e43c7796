"""Image-folder data sets: hidden entries ignored, splits with different classes refused, every bad file
named (decompression bombs included, in data-loading workers too); a fuzz over random folder trees."""

import io
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_exit import exit_message
from amdim_lib.data.datasets import UnreadableImageError, build_dataset


def _png(size=32, value=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG whose header claims `width` x `height` pixels (its data is a 2x2 image's)."""
    data = bytearray(_png(2))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def _tree(root: Path, classes: dict, n: int = 2, size: int = 32):
    for split, names in classes.items():
        for c, name in enumerate(names):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / name / f"{i}.png").write_bytes(_png(size, 40 * c + i))


def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path):
    _tree(tmp_path, {"train": ["cat", "dog"], "test": ["cat", "dog"]})
    for hidden in (tmp_path / "train" / ".ipynb_checkpoints", tmp_path / "train" / "cat" / ".ipynb_checkpoints"):
        hidden.mkdir()
        (hidden / "0-checkpoint.png").write_bytes(_png())
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(_png())
    (tmp_path / "train" / ".DS_Store").write_bytes(b"\x00\x01")
    train = build_dataset("folder", "train", data_dir=tmp_path)
    test = build_dataset("folder", "test", data_dir=tmp_path)
    assert train.classes == test.classes == ["cat", "dog"]
    assert len(train) == 4 and not any("/." in path for path, _ in train.samples)
    assert all(label == train.classes.index(Path(path).parent.name) for path, label in train.samples)


def test_thousands_of_empty_classes_are_not_listed_one_by_one(tmp_path):
    for split in ("train", "test"):
        for index in range(3000):
            (tmp_path / split / f"class_{index:05d}").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        build_dataset("folder", "train", data_dir=tmp_path)
    message = str(error.value)
    assert "3000 class folder(s)" in message and "hold no image: class_00000" in message and "and 2992 more" in message
    assert len(message) < 2000


def _split(root, images: dict) -> None:
    """root/train and root/test, each with one class folder per name holding the given PIL images."""
    for split in ("train", "test"):
        for name, image in images.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            image.save(root / split / name / ("0.tif" if image.mode in ("I", "F", "CMYK") else "0.png"))


def test_every_image_mode_loads_as_the_rgb_it_shows_and_unknown_ranges_are_refused_by_name(tmp_path):
    grey16 = Image.fromarray(np.full((40, 40), 40_000, np.uint16))      # I;16: its top 8 bits, 40000 >> 8 = 156
    modes = {"one_bit": Image.new("1", (40, 40), 1), "grey": Image.new("L", (40, 40), 90),
             "palette": Image.new("RGB", (40, 40), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
             "alpha": Image.new("RGBA", (40, 40), (10, 200, 30, 128)), "cmyk": Image.new("CMYK", (40, 40), (0, 0, 0, 0)),
             "sixteen": grey16}
    _split(tmp_path / "ok", modes)
    data = build_dataset("folder", "train", data_dir=tmp_path / "ok")
    pixels = {data.classes[label]: np.asarray(image) for image, label in (data[i] for i in range(len(data)))}
    assert all(p.shape == (40, 40, 3) and p.dtype == np.uint8 for p in pixels.values())
    assert pixels["sixteen"].mean() == 156, "16-bit grey is scaled, not clipped at 255"
    assert pixels["one_bit"].mean() == 255 and pixels["grey"].mean() == 90 and pixels["cmyk"].mean() == 255
    assert tuple(pixels["palette"][0, 0]) == (10, 200, 30) and tuple(pixels["alpha"][0, 0]) == (10, 200, 30)
    for name, image in (("int32", Image.fromarray(np.full((40, 40), 7, np.int32))),
                        ("float", Image.fromarray(np.full((40, 40), 0.5, np.float32)))):
        _split(tmp_path / name, {"a": image, "b": Image.new("L", (40, 40))})
        data = build_dataset("folder", "train", data_dir=tmp_path / name)
        with pytest.raises(UnreadableImageError, match=r"0\.tif .*pixels \(PIL mode (I|F)\) of unknown range"):
            [data[i] for i in range(len(data))]
        with pytest.warns(UserWarning, match="skipped 1 unreadable"):
            assert len(build_dataset("folder", "train", data_dir=tmp_path / name, skip_bad_images=True)) == 1


def test_a_folder_link_loop_inside_a_class_is_not_followed(tmp_path):
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                (folder / f"{index}.png").write_bytes(_png(value=index))
        (tmp_path / split / "a" / "loop").symlink_to(tmp_path / split / "a")  # a link to its own folder
    with pytest.warns(UserWarning, match=r"1 folder link\(s\) inside class folders not followed, e\.g\. .*a/loop"):
        data = build_dataset("folder", "train", data_dir=tmp_path)
    assert len(data) == 6, "each real image once"


def test_splits_with_different_classes_are_refused_with_the_difference(tmp_path):
    _tree(tmp_path, {"train": ["cat", "dog", "fox"], "test": ["cat", "fox", "wolf"]})
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"only in train/: dog; only in test/: wolf"):
            build_dataset("folder", split, data_dir=tmp_path)
    out = tmp_path / "run"
    message = exit_message(["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--preset", "smoke",
                             "--no-progress", "--set", "batch_size=2", "--out", str(out)])
    assert f"class folders of {tmp_path / 'train'} and {tmp_path / 'test'} differ" in message
    assert "only in train/: dog; only in test/: wolf" in message and "\n" not in message
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.jsonl").exists()


def test_a_decompression_bomb_is_named_and_can_be_skipped(tmp_path):
    _tree(tmp_path, {"train": ["a", "b"], "test": ["a", "b"]})
    bomb = tmp_path / "train" / "a" / "bomb.png"
    bomb.write_bytes(_png_claiming(30000, 30000))
    data = build_dataset("folder", "train", data_dir=tmp_path)
    index = next(i for i, (path, _) in enumerate(data.samples) if path == str(bomb))
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*bomb\.png \(DecompressionBombError"):
        data[index]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        checked = build_dataset("folder", "train", data_dir=tmp_path, skip_bad_images=True)
    assert checked.skipped == [str(bomb)] and len(checked) == 4


def test_a_bad_image_in_a_loader_worker_is_named_in_one_line(tmp_path):
    _tree(tmp_path, {"train": ["a", "b"], "test": ["a", "b"]}, n=4)
    broken = tmp_path / "train" / "b" / "2.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    message = exit_message(["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--preset", "smoke",
                             "--no-progress", "--set", "batch_size=4", "--set", "num_workers=1",
                             "--out", str(tmp_path / "run")])
    assert message.startswith(f"error: cannot read image {broken} (UnidentifiedImageError")
    assert "skip_bad_images=True" in message and "Traceback" not in message and "\n" not in message


# ----------------------------------------------------------------------------- fuzz

CLASS_NAMES = ["cat", "dog", "fox", "wolf", "a b", "ünï", "_x", "1", ".ipynb_checkpoints", ".git", ".hidden"]
SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".txt", ""]


MODES = ["1", "L", "P", "RGBA", "CMYK", "I;16", "I", "F"]


def _image_in_mode(rng: random.Random, folder: Path, stem: str) -> None:
    """A small image in one of PIL's modes, in a format that keeps that mode (TIFF for CMYK, I and F)."""
    mode = rng.choice(MODES)
    pixels = {"I;16": lambda: Image.fromarray(np.full((8, 8), rng.randrange(65536), np.uint16)),
              "I": lambda: Image.fromarray(np.full((8, 8), rng.randrange(-2**31, 2**31), np.int32)),
              "F": lambda: Image.fromarray(np.full((8, 8), rng.uniform(-1e3, 1e3), np.float32))}
    image = pixels[mode]() if mode in pixels else Image.new(mode, (8, 8))
    image.save(folder / (stem + (".tif" if mode in ("CMYK", "I", "F") else ".png")))


def _random_link(rng: random.Random, folder: Path, stem: str) -> None:
    """A link among the images: to a good image elsewhere, to nothing, to itself, or to a folder."""
    target = rng.choice(["good", "dangling", "self", "folder"])
    link = folder / (stem + ".png")
    if target == "good":
        (folder.parent / f"{stem}-target.png").write_bytes(_png(8, 7))
        link.symlink_to(folder.parent / f"{stem}-target.png")
    elif target == "dangling":
        link.symlink_to(folder / "missing.png")
    elif target == "self":
        link.symlink_to(link)
    else:
        link.symlink_to(folder)


def _random_file(rng: random.Random, folder: Path, number: int) -> None:
    kind = rng.choice(["good"] * 6 + ["bytes", "bomb", "zero", "tall", "empty", "mode", "mode", "link"])
    if kind in ("mode", "link"):
        return (_image_in_mode if kind == "mode" else _random_link)(rng, folder, f"f{number}")
    name = ("." if rng.random() < 0.15 else "") + f"f{number}" + rng.choice(SUFFIXES)
    content = {"good": lambda: _png(rng.choice([8, 32, 40]), rng.randrange(256)),
               "bytes": lambda: rng.randbytes(rng.randint(1, 200)),
               "bomb": lambda: _png_claiming(rng.choice([30000, 2**31 - 1]), rng.choice([30000, 1])),
               "zero": lambda: _png_claiming(0, rng.choice([0, 5])), "tall": lambda: _png_claiming(1, 70000),
               "empty": lambda: b""}[kind]()
    (folder / name).write_bytes(content)


def _random_tree(rng: random.Random, root: Path) -> None:
    shared, same = rng.sample(CLASS_NAMES, rng.randint(1, 4)), rng.random() < 0.8
    for split in ("train", "test"):
        names = shared if same else rng.sample(CLASS_NAMES, rng.randint(1, 4))
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(rng.randint(0 if rng.random() < 0.05 else 1, 5)):
                _random_file(rng, folder, number)
            if rng.random() < 0.2:
                (folder / ".ipynb_checkpoints").mkdir()
                _random_file(rng, folder / ".ipynb_checkpoints", 99)
        if rng.random() < 0.2:
            (root / split / ".DS_Store").write_bytes(b"\x00")


def _visible_classes(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_split(root: Path, split: str, skip_bad: bool) -> None:
    try:
        data = build_dataset("folder", split, data_dir=root, skip_bad_images=skip_bad)
    except (ValueError, FileNotFoundError) as error:
        assert str(root) in str(error), error
        if _visible_classes(root / "train") != _visible_classes(root / "test"):
            assert "differ" in str(error)
        return
    assert _visible_classes(root / "train") == _visible_classes(root / "test") == data.classes
    for path, label in data.samples:
        relative = Path(path).relative_to(root / split)
        assert not any(part.startswith(".") for part in relative.parts), path
        assert data.classes[label] == relative.parts[0], "the label is the class folder's index"
    for i in range(len(data)):
        try:
            image, label = data[i]
            assert image.mode == "RGB" and label == data.samples[i][1]
        except UnreadableImageError as error:
            assert data.samples[i][0] in str(error) and "\n" not in str(error)


def test_fuzz_folder_data_sets(tmp_path):
    """Random trees of class folders with hidden entries, random bytes, extreme image headers, images in every
    PIL mode and links (to images, to nothing, to themselves, to folders): every outcome is a data set with the
    right labels or one clear error, never a traceback."""
    rng, start = random.Random(0), time.time()
    for trial in range(60):
        root = tmp_path / f"tree{trial}"
        _random_tree(rng, root)
        for split in ("train", "test"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skipped files and PIL's size warnings: not under test here
                _check_split(root, split, skip_bad=rng.random() < 0.5)
    assert time.time() - start < 30
