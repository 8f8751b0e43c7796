"""The paper's data sets, read from tiny files in their native formats through the real loaders.

CIFAR python pickles and STL-10 binaries go through torchvision's own CIFAR10/CIFAR100/STL10 with
download=False (only the md5 table is pointed at the fake files); ImageNet and Places205 trees go
through the image-folder and split-list readers. No test touches the network.
"""

import hashlib
import json
import pickle
import socket

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, STL10

import amdim_lib.run.probes as probes_module
from amdim_lib.data import datasets
from amdim_lib.__main__ import main
from amdim_lib.run.checkpoints import save_checkpoint
from amdim_lib.data.datasets import build_dataset, default_root, fetch, num_classes, self_supervised_split
from amdim_lib.run.presets import PRESETS, get_config
from amdim_lib.run.runfolder import checkpoint_identity
from amdim_lib.analysis.results import PAPER_LINEAR, markdown_table, results_table, row, run_row, table_from_runs
from amdim_lib.run.build import build_data, build_encoder, build_splits
from amdim_lib.run.train import train
from amdim_lib.core.views import VIEW_POLICIES, ViewPair, eval_transform, make_two_views


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may be downloaded silently."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pixels(label, index, size):
    """An image whose colour encodes its class and whose corner pixel encodes its index."""
    rng = np.random.default_rng(1000 * label + index)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[..., 0] = (image[..., 0] // 4) + 60 * (label % 4)
    image[0, 0] = (label, index % 256, 7)
    return image


def fake_cifar(root, monkeypatch, hundred=False, per_batch=8, n_test=12):
    """The torchvision CIFAR layout with tiny python pickles; returns the class names."""
    cls, folder = (CIFAR100, "cifar-100-python") if hundred else (CIFAR10, "cifar-10-batches-py")
    n_classes = 100 if hundred else 10
    names = [f"class{i:03d}" for i in range(n_classes)]
    base = root / folder
    base.mkdir(parents=True)

    def batch(path, count, offset):
        labels = [(offset + i) % n_classes for i in range(count)]
        data = np.stack([_pixels(y, offset + i, 32).transpose(2, 0, 1).reshape(-1) for i, y in enumerate(labels)])
        key = "fine_labels" if hundred else "labels"
        entry = {"data": data, key: labels, **({"coarse_labels": [y // 5 for y in labels]} if hundred else {})}
        path.write_bytes(pickle.dumps(entry, protocol=2))
        return [path.name, _md5(path)]

    if hundred:
        train_list = [batch(base / "train", 5 * per_batch, 0)]
    else:
        train_list = [batch(base / f"data_batch_{i + 1}", per_batch, i * per_batch) for i in range(5)]
    test_list = [batch(base / ("test" if hundred else "test_batch"), n_test, 10_000)]
    meta_name, key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    (base / meta_name).write_bytes(pickle.dumps({key: names}, protocol=2))
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": key, "md5": _md5(base / meta_name)})
    return names


STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def fake_stl10(root, monkeypatch, n_train=20, n_test=10, n_unlabeled=40):
    """The torchvision STL-10 layout: column-major uint8 binaries, 1-based labels, class_names.txt."""
    base = root / "stl10_binary"
    base.mkdir(parents=True)

    def images(path, labels, offset):
        stack = np.stack([_pixels(y, offset + i, 96) for i, y in enumerate(labels)])  # (N, H, W, C)
        path.write_bytes(stack.transpose(0, 3, 2, 1).tobytes())  # the file stores (N, C, W, H)

    train_y = [i % 10 for i in range(n_train)]
    test_y = [(3 * i) % 10 for i in range(n_test)]
    images(base / "train_X.bin", train_y, 0)
    images(base / "test_X.bin", test_y, 5000)
    images(base / "unlabeled_X.bin", [0] * n_unlabeled, 9000)
    (base / "train_y.bin").write_bytes(np.asarray(train_y, np.uint8).__add__(1).tobytes())
    (base / "test_y.bin").write_bytes(np.asarray(test_y, np.uint8).__add__(1).tobytes())
    (base / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    (base / "fold_indices.txt").write_text("\n".join(" ".join(str(j) for j in range(i, n_train, 10)) for i in range(10)))
    monkeypatch.setattr(STL10, "train_list", [[f, _md5(base / f)] for f in ("train_X.bin", "train_y.bin", "unlabeled_X.bin")])
    monkeypatch.setattr(STL10, "test_list", [[f, _md5(base / f)] for f in ("test_X.bin", "test_y.bin")])


def fake_tree(root, splits=("train", "val"), classes=("n01", "n02", "n03"), per_class=4, size=40):
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(_pixels(c, i, size)).save(root / split / name / f"{i}.JPEG", format="JPEG")


def fake_places_lists(root, per_class=4, size=40):
    """Places205 as distributed: images256/<letter>/<category>/..., and the split lists."""
    categories = ["a/abbey", "a/apartment_building/outdoor", "b/bridge"]
    (root / "trainvalsplit_places205").mkdir(parents=True)
    for split, count in (("train", per_class), ("val", 2)):
        lines = []
        for label, category in enumerate(categories):
            (root / "images256" / category).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f"{category}/{split}{i}.jpg"
                Image.fromarray(_pixels(label, i, size)).save(root / "images256" / name, format="JPEG")
                lines.append(f"{name} {label}")
        (root / "trainvalsplit_places205" / f"{split}_places205.csv").write_text("\n".join(lines) + "\n")
    return categories


# ----------------------------------------------------------------------------- CIFAR-10/100

@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles_load_through_torchvision(tmp_path, monkeypatch, hundred):
    names = fake_cifar(tmp_path, monkeypatch, hundred)
    name = "cifar100" if hundred else "cifar10"
    train_set = build_dataset(name, "train", data_dir=tmp_path)
    test_set = build_dataset(name, "test", data_dir=tmp_path)
    assert len(train_set) == 40 and len(test_set) == 12
    assert num_classes(train_set) == (100 if hundred else 10) and train_set.classes == names
    image, label = train_set[13]
    pixels = np.asarray(image)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert pixels[0, 0].tolist() == [label, 13, 7], "channel-major rows must decode to the image written"
    assert (pixels == _pixels(label, 13, 32)).all()
    small = build_dataset(name, "train", data_dir=tmp_path, size=10, seed=3)
    assert len(small) == 10 and num_classes(small) == num_classes(train_set)
    assert [small[i][1] for i in range(10)] == [build_dataset(name, "train", data_dir=tmp_path, size=10, seed=3)[i][1]
                                                for i in range(10)]


def test_a_corrupted_cifar_file_is_named(tmp_path, monkeypatch):
    fake_cifar(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(FileNotFoundError, match="incomplete or corrupted") as info:
        build_dataset("cifar10", "train", data_dir=tmp_path)
    assert "cifar-10-batches-py" in str(info.value) and "download --dataset cifar10" in str(info.value)


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("stl10", "stl10_binary")])
def test_missing_torchvision_data_names_set_root_layout_and_command(tmp_path, name, folder):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(name, "train" if name != "stl10" else "train+unlabeled", data_dir=root)
    message = str(info.value)
    assert datasets.NAMES[name] in message and str(root) in message and f"{root}/{folder}/" in message
    assert f"python -m amdim_lib download --dataset {name} --data-dir {root}" in message
    assert "--download" in message and "download=True" in message
    assert not root.exists(), "nothing is created (or fetched) without the switch"


def test_default_root_is_the_repository_data_folder_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    repository = datasets.Path(datasets.__file__).resolve().parents[2]
    assert default_root("cifar10") == repository / "data" / "cifar10"
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert default_root("stl10") == tmp_path / "stl10"
    with pytest.raises(FileNotFoundError) as info:
        build_dataset("cifar100", "test")
    message = str(info.value)
    assert str(tmp_path / "cifar100") in message and "python -m amdim_lib download --dataset cifar100\n" in message


def test_download_happens_only_with_the_switch(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append(url)
        fake_cifar(tmp_path / "payload", monkeypatch)
        (tmp_path / "payload" / "cifar-10-batches-py").rename(datasets.Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    root = tmp_path / "cifar10"
    with pytest.raises(FileNotFoundError):
        build_dataset("cifar10", "train", data_dir=root)
    assert calls == []
    data = build_dataset("cifar10", "train", data_dir=root, download=True)
    assert len(calls) == 1 and len(data) == 40
    build_dataset("cifar10", "test", data_dir=root, download=True)  # present and verified: no second download
    assert len(calls) == 1


def test_smoke_training_step_on_fake_cifar10(tmp_path, monkeypatch):
    fake_cifar(tmp_path / "c10", monkeypatch)
    config = get_config("cifar10", "smoke", data_dir=str(tmp_path / "c10"), batch_size=16, epochs=1, device="cpu")
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["finished"]
    assert 0 <= summary["eval"]["test_linear_acc"] <= 1
    assert np.isfinite(summary["last"]["loss"])


# ----------------------------------------------------------------------------- STL-10

def test_stl10_binaries_and_its_three_splits(tmp_path, monkeypatch):
    fake_stl10(tmp_path, monkeypatch)
    train_set = build_dataset("stl10", "train", data_dir=tmp_path)
    both = build_dataset("stl10", "train+unlabeled", data_dir=tmp_path)
    test_set = build_dataset("stl10", "test", data_dir=tmp_path)
    assert (len(train_set), len(both), len(test_set)) == (20, 60, 10)
    assert train_set.classes == STL_CLASSES and num_classes(both) == 10
    image, label = train_set[7]
    assert image.size == (96, 96) and label == 7 and (np.asarray(image) == _pixels(7, 7, 96)).all()
    labels = [both[i][1] for i in range(len(both))]
    assert labels[:20] == list(range(10)) * 2 and labels[20:] == [-1] * 40
    assert sorted({test_set[i][1] for i in range(10)}) == list(range(10))
    assert self_supervised_split("stl10") == "train+unlabeled" and self_supervised_split("cifar10") == "train"
    with pytest.raises(ValueError, match="STL-10 only"):
        build_dataset("cifar10", "train+unlabeled", data_dir=tmp_path)


def test_stl10_trains_on_unlabeled_but_probes_never_see_label_minus_one(tmp_path, monkeypatch):
    fake_stl10(tmp_path, monkeypatch, n_train=10, n_unlabeled=20)
    config = get_config("stl10", "smoke", data_dir=str(tmp_path), batch_size=15, epochs=1, device="cpu")
    probe_train, _ = build_splits(config)  # what frozen-feature probes fit on
    ssl_train, _ = build_splits(config, self_supervised=True)
    assert len(probe_train) == 10 and min(probe_train[i][1] for i in range(10)) == 0
    assert len(ssl_train) == 30
    pairs, test_set, n_classes = build_data(config)
    assert len(pairs) == 30 and n_classes == 10 and test_set[0][0].shape == (3, 64, 64)

    seen_labels, probe_targets = [], []
    real_item, real_xent = ViewPair.__getitem__, probes_module.F.cross_entropy

    def item_spy(self, key):
        item = real_item(self, key)
        seen_labels.append(item[2])
        return item

    def xent_spy(logits, target, *args, **kwargs):
        probe_targets.append(target.clone())
        return real_xent(logits, target, *args, **kwargs)

    monkeypatch.setattr(ViewPair, "__getitem__", item_spy)  # (the smoke preset loads in this process)
    monkeypatch.setattr(probes_module.F, "cross_entropy", xent_spy)
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["last"]["loss"])
    labels = torch.tensor(seen_labels)
    assert (labels == -1).sum() > 0 and (labels >= 0).sum() > 0, "training batches mix unlabelled and labelled images"
    assert probe_targets and all((t >= 0).all() for t in probe_targets), "label -1 reached a probe's loss"


# ----------------------------------------------------------------------------- ImageNet and Places205

@pytest.mark.parametrize("train_dir,test_dir", [("train", "val"), ("ILSVRC2012_img_train", "ILSVRC2012_img_val")])
def test_imagenet_class_folders_standard_and_official_names(tmp_path, train_dir, test_dir):
    fake_tree(tmp_path, (train_dir, test_dir))
    with pytest.warns(UserWarning, match="3 classes, not 1000"):
        train_set = build_dataset("imagenet", "train", data_dir=tmp_path)
    test_set = build_dataset("imagenet", "test", data_dir=tmp_path)
    assert len(train_set) == len(test_set) == 12 and train_set.classes == test_set.classes == ["n01", "n02", "n03"]
    image, label = test_set[5]
    assert image.mode == "RGB" and label == 1


def test_imagenet_errors_flat_val_mismatched_classes_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        build_dataset("imagenet", "train", data_dir=tmp_path / "none")
    message = str(info.value)
    assert "ImageNet" in message and str(tmp_path / "none") in message and "/train/<class>/" in message
    assert "ILSVRC2012_img_train.tar" in message and "python -m amdim_lib download --dataset imagenet" in message
    fake_tree(tmp_path, ("train",))
    (tmp_path / "val").mkdir()
    Image.fromarray(_pixels(0, 0, 40)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")  # as the tar unpacks
    with pytest.raises(FileNotFoundError, match="no usable images under .*val"):
        build_dataset("imagenet", "test", data_dir=tmp_path)
    fake_tree(tmp_path / "other", ("train", "val"))
    (tmp_path / "other" / "val" / "n03").rename(tmp_path / "other" / "val" / "n04")
    with pytest.raises(ValueError, match="class folders .* differ"):
        build_dataset("imagenet", "test", data_dir=tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz not found"):
        fetch("imagenet", tmp_path / "empty")


def test_places205_split_lists_official_folder_names_and_its_205_classes(tmp_path):
    categories = fake_places_lists(tmp_path / "lists")
    with pytest.warns(UserWarning, match="3 classes, not 205"):
        train_set = build_dataset("places205", "train", data_dir=tmp_path / "lists")
    test_set = build_dataset("places205", "test", data_dir=tmp_path / "lists")
    assert (len(train_set), len(test_set)) == (12, 6)
    assert train_set.classes == ["abbey", "apartment_building/outdoor", "bridge"]
    image, label = train_set[4]
    colour = np.asarray(image).reshape(-1, 3).mean(0) - _pixels(1, 0, 40).reshape(-1, 3).mean(0)
    assert label == 1 and image.size == (40, 40) and np.abs(colour).max() < 4  # the image written (JPEG: roughly)
    fake_tree(tmp_path / "official", ("places205_256_train", "places205_256_val"),
              classes=[f"c{i:03d}" for i in range(205)], per_class=1, size=8)
    assert num_classes(build_dataset("places205", "train", data_dir=tmp_path / "official")) == 205
    assert len(categories) == 3


def test_places205_archives_are_unpacked_only_with_the_switch(tmp_path):
    import tarfile
    fake_places_lists(tmp_path / "payload")
    root = tmp_path / "places205"
    root.mkdir()
    for archive, member in zip(datasets.PLACES_ARCHIVES, ("images256", "trainvalsplit_places205")):
        with tarfile.open(root / archive, "w:gz") as tar:
            tar.add(tmp_path / "payload" / member, arcname=member)
    with pytest.raises(FileNotFoundError, match="imagesPlaces205_resize.tar.gz"):
        build_dataset("places205", "train", data_dir=root)
    with pytest.warns(UserWarning, match="not 205"):
        assert len(build_dataset("places205", "train", data_dir=root, download=True)) == 12


def test_transfer_evaluation_imagenet_encoder_on_places205(tmp_path, capsys):
    config = get_config("imagenet", "smoke", device="cpu")
    checkpoint = tmp_path / "imagenet-run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.manual_seed(0)
    save_checkpoint(checkpoint, {"config": config.to_dict(), "encoder": build_encoder(config).state_dict()})
    fake_places_lists(tmp_path / "places", per_class=10)
    with pytest.warns(UserWarning, match="not 205"):
        main(["eval", "--checkpoint", str(checkpoint), "--dataset", "places205", "--data-dir",
              str(tmp_path / "places"), "--no-baselines"])
    out = tmp_path / "imagenet-run" / "eval-places205"
    results = json.loads((out / "eval.json").read_text())
    assert 0 <= results["AMDIM (trained)"]["linear"] <= 1
    info = json.loads((out / "eval_info.json").read_text())
    assert info["dataset"] == "places205" and info["trained_on"] == "imagenet"
    r = run_row(out)
    assert r["name"] == "Places205, ImageNet encoder" and r["paper_key"] == "places205"
    # A smoke-sized encoder is not the paper's ImageNet model: its row has no paper figure beside it.
    assert results_table([r]).splitlines()[2 + 4].endswith("| – |")  # after CIFAR-10/100, STL-10, ImageNet
    capsys.readouterr()


# ----------------------------------------------------------------------------- presets, CLI, views, results

def test_paper_presets_per_data_set():
    # The paper's models: CIFAR-10/100 ndf 320 / n_rkhs 1280 / depth 10, STL-10 192 / 1536 / 8, batch 200,
    # 300 epochs with lr x0.2 at 250 and 280; the small CIFAR model is the official code's default.
    paper = {"cifar10": (32, 320, 1280, 10), "cifar100": (32, 320, 1280, 10), "stl10": (64, 192, 1536, 8)}
    for name, (size, ndf, n_rkhs, depth) in paper.items():
        c = get_config(name, "paper")
        assert (c.image_size, c.ndf, c.n_rkhs, c.n_depth, c.batch_size, c.epochs, c.milestones, c.tclip, c.lr) == \
            (size, ndf, n_rkhs, depth, 200, 300, (250, 280), 20.0, 2e-4)
        assert c.train_size is None
    for name in ("cifar10", "cifar100"):
        small = get_config(name, "paper-small")
        assert (small.ndf, small.n_rkhs, small.n_depth, small.batch_size) == (128, 1024, 3, 200)
    assert get_config("imagenet", "paper").batch_size == 200 and get_config("imagenet", "paper-192").batch_size == 480
    sizes = {p: (get_config("imagenet", p).ndf, get_config("imagenet", p).n_rkhs, get_config("imagenet", p).n_depth)
             for p in ("paper", "paper-256", "paper-192")}
    assert sizes == {"paper": (320, 2560, 10), "paper-256": (256, 2048, 10), "paper-192": (192, 1536, 8)}
    assert get_config("imagenet", "paper").milestones == (60, 90) and get_config("imagenet", "paper-192").epochs == 50
    for name, presets in PRESETS.items():  # every preset is valid (n_rkhs >= the local width, ...)
        for preset in presets:
            assert get_config(name, preset).dataset == name


def test_print_config_needs_no_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))  # an empty data root
    main(["train", "--dataset", "imagenet", "--preset", "paper", "--print-config"])
    config = json.loads(capsys.readouterr().out)
    assert (config["ndf"], config["n_rkhs"], config["image_size"], config["download"]) == (320, 2560, 128, False)
    main(["train", "--dataset", "places205", "--preset", "paper-192", "--download", "--print-config"])
    assert json.loads(capsys.readouterr().out)["download"] is True
    with pytest.raises(SystemExit, match="CIFAR-100 not found"):
        main(["train", "--dataset", "cifar100", "--preset", "smoke", "--no-progress", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="unknown preset 'paper-192' for cifar10"):
        main(["train", "--dataset", "cifar10", "--preset", "paper-192", "--print-config"])


def test_stronger_imagenet_policies(tmp_path):
    image = Image.fromarray(_pixels(2, 0, 150))
    for policy in ("imagenet-randaugment", "imagenet-trivialaugment", "imagenet-autoaugment"):
        x1, x2 = make_two_views(policy, 128)(image)
        assert x1.shape == x2.shape == (3, 128, 128) and not torch.equal(x1, x2)
        assert torch.equal(eval_transform(policy, 128)(image), eval_transform("imagenet", 128)(image))
        assert get_config("imagenet", "paper", policy=policy).policy == policy
    assert set(VIEW_POLICIES) >= {"cifar", "stl10", "imagenet", "imagenet-randaugment"}
    with pytest.raises(ValueError, match="policy='fastaa'"):
        get_config("imagenet", "smoke", policy="fastaa")


def test_results_table_puts_the_paper_beside_ours(tmp_path):
    run = tmp_path / "cifar-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(get_config("cifar10", "paper").to_dict()))  # the paper's CIFAR model
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 900}) + "\n")
    (run / "eval.json").write_text(json.dumps({"AMDIM (trained)": {"linear": 0.6234, "knn": 0.55},
                                               "raw pixels": {"linear": 0.39, "knn": 0.3}}))
    (run / "checkpoint.pt").write_bytes(b"the evaluated weights")
    (run / "eval_info.json").write_text(json.dumps(checkpoint_identity(run / "checkpoint.pt")))
    online = tmp_path / "stl-run"
    online.mkdir()
    (online / "config.json").write_text(json.dumps(get_config("stl10", "smoke").to_dict()))
    (online / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 4, "test_linear_acc": 0.25,
                                                      "test_mlp_acc": 0.3}) + "\n")
    table = table_from_runs([run, online, tmp_path / "absent"])
    lines = table.splitlines()
    assert lines[0].startswith("| data set |") and "paper, linear (%)" in lines[0]
    assert lines[2] == ("| CIFAR-10 | cifar-run | 32 px, ndf 320, n_rkhs 1280, depth 10; 900 steps of 200 | 62.3 | – | "
                        "55.0 | 91.2 |")
    assert lines[3] == "| CIFAR-100 | not run yet | – | – | – | – | 70.2 |"
    # The STL-10 run has the smoke preset's encoder, not the paper's: no paper figure beside it.
    assert lines[4].startswith("| STL-10 | stl-run (online probes) |") and lines[4].endswith("| 25.0 | 30.0 | – | – |")
    assert [line.split(" | ")[-1] for line in lines[5:7]] == [f"{PAPER_LINEAR[k]:.1f} |" for k in ("imagenet", "places205")]
    folder = row("folder", 0.63, data_dir="../shared/data/cifar10-subset", run="demo")
    assert folder["name"] == "CIFAR-10 (cifar10-subset, image folder)" and folder["paper_key"] == "cifar10"
    assert results_table([folder], include_missing=False, notes=False).endswith("| 63.0 | – | – | – |")
    paper_sized = row("folder", 0.63, data_dir="../shared/data/cifar10-subset", run="paper", model="cifar")
    assert results_table([paper_sized], include_missing=False, notes=False).endswith("| 91.2 |")
    assert results_table([row("shapes", 0.9)], include_missing=False, notes=False).endswith("| – |")


def test_results_table_names_a_corrupt_run_file_and_keeps_a_torn_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(get_config("cifar10", "demo").to_dict()))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 900}) + "\n")
    (run / "eval.json").write_text('{"AMDIM (trained)": {"linear": 0.5')  # cut short: not the same as absent
    with pytest.raises(ValueError, match=str(run / "eval.json")):
        table_from_runs([run])
    (run / "eval.json").write_text(json.dumps({"AMDIM (trained)": {"linear": 0.5}}))
    with (run / "metrics.jsonl").open("a") as log:
        log.write('{"kind": "tra')  # a run killed while writing its log
    with pytest.warns(UserWarning, match="torn last line"):
        table = table_from_runs([run], include_missing=False, notes=False)
    assert "900 steps of 64 | 50.0 |" in table and "(unverified: the evaluated checkpoint was not recorded" in table


def test_markdown_table_aligns_each_column():
    assert markdown_table(["a", "b"], [["x", 1], ["y", 2]], "lr") == "| a | b |\n|---|---:|\n| x | 1 |\n| y | 2 |"
    assert markdown_table(["a"], []) == "| a |\n|---|"
    with pytest.raises(ValueError, match="one of 'l' or 'r' for each of the 2 columns"):
        markdown_table(["a", "b"], [], "l")
