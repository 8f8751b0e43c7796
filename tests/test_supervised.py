import numpy as np
import pytest
import torch
from PIL import Image

from amdim_lib.evaluate import feature_sets, linear_probe
from amdim_lib.presets import get_config
from amdim_lib.supervised import _scaled_schedule, budget_steps, labelled_data, train_supervised
from amdim_lib.train import lr_factor, train


@pytest.fixture(scope="module")
def dark_and_bright(tmp_path_factory):
    """An image folder whose two classes any encoder can learn in a few steps: dark and bright noise
    (brightness survives the colour jitter and grayscale of the views)."""
    root = tmp_path_factory.mktemp("dark_bright")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 24)):
        for name, mean in (("dark", 50), ("bright", 205)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(mean + 30 * rng.normal(size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _config(root, **changes):
    return get_config("folder", "smoke", data_dir=str(root), batch_size=16, epochs=2, lr=1e-3, warmup_steps=1,
                      num_workers=0, **changes)


def test_budget_matches_the_self_supervised_run(tmp_path):
    config = get_config("shapes", "smoke", train_size=64, test_size=32, batch_size=16, epochs=3)
    assert budget_steps(config) == (64 // 16) * 3
    summary = train(config, tmp_path, stop_at_step=1, progress=False)
    assert summary["total_steps"] == budget_steps(config)


def test_scaled_schedule_keeps_warmup_and_milestones_at_the_same_fractions():
    config = get_config("shapes", "demo", epochs=10, milestones=(5,), warmup_steps=100)
    scaled, per_epoch = _scaled_schedule(config, steps=100, budget=1000)
    assert scaled.warmup_steps == 10 and per_epoch == 10
    factors = [lr_factor(s, scaled.warmup_steps, [m * per_epoch for m in scaled.milestones], scaled.gamma)
               for s in range(100)]
    assert factors[9] == 1.0 and factors[49] == 1.0 and factors[50] == pytest.approx(config.gamma)
    full, _ = _scaled_schedule(config, steps=1000, budget=1000)
    assert full == config


def test_supervised_training_learns_labels_and_its_features_probe_well(dark_and_bright):
    config = _config(dark_and_bright)
    pairs, test, n_classes = labelled_data(config)
    assert len(pairs) == 96 and len(test) == 48 and n_classes == 2
    encoder, summary = train_supervised(config, steps=12)
    assert summary["steps"] == 12 and summary["budget_steps"] == budget_steps(config) == 12
    assert summary["fraction"] == 1.0 and not summary["loaded"] and len(summary["history"]) == 12
    first, last = summary["history"][0], summary["history"][-1]
    assert last[1] < first[1], "cross-entropy falls"
    assert summary["test_acc"] >= 0.9
    assert not encoder.training and next(encoder.parameters()).device.type == "cpu"
    train_x, train_y, test_x, test_y = feature_sets(encoder, config, baselines=False)["AMDIM (trained)"]
    assert linear_probe(train_x, train_y, test_x, test_y, Cs=(1.0,))["accuracy"] >= 0.9


def test_a_fraction_of_the_budget_and_load_if_present(dark_and_bright, tmp_path):
    config = _config(dark_and_bright)
    encoder, summary = train_supervised(config, steps=3, out_dir=tmp_path)
    assert summary["steps"] == 3 and summary["fraction"] == pytest.approx(3 / 12)
    assert (tmp_path / "supervised.pt").exists() and (tmp_path / "supervised.json").exists()
    again, loaded = train_supervised(config, steps=3, out_dir=tmp_path)
    assert loaded["loaded"] and loaded["test_acc"] == summary["test_acc"]
    for (name, a), b in zip(encoder.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    _, other = train_supervised(config, steps=2, out_dir=tmp_path)
    assert not other["loaded"] and other["steps"] == 2, "another budget trains again"


def test_supervised_training_is_seeded(dark_and_bright):
    config = _config(dark_and_bright)
    a, _ = train_supervised(config, steps=1)
    b, _ = train_supervised(config, steps=1)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    with pytest.raises(ValueError, match="at least one update"):
        train_supervised(config, steps=0)
