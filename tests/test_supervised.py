import numpy as np
import pytest
import torch
from PIL import Image

from amdim_lib.run import supervised
from amdim_lib.run.build import budget_config, build_data, steps_per_epoch
from amdim_lib.analysis.evaluate import feature_sets, linear_probe
from amdim_lib.run.presets import get_config
from amdim_lib.run.supervised import train_supervised
from amdim_lib.run.build import lr_factor
from amdim_lib.run.train import build_state, train


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
    return get_config("folder", "smoke", data_dir=str(root), **{**dict(batch_size=16, epochs=2, lr=1e-3, warmup_steps=1,
                                                                     num_workers=0), **changes})


def test_budget_matches_the_self_supervised_run(tmp_path):
    config = get_config("shapes", "smoke", train_size=64, test_size=32, batch_size=16, epochs=3)
    assert steps_per_epoch(config) == 64 // 16
    assert budget_config(config, None) == (config, (64 // 16) * 3)
    summary = train(config, tmp_path, stop_at_step=1, progress=False)
    assert summary["total_steps"] == budget_config(config, None)[1]


def _schedules(monkeypatch) -> list:
    """Records the learning-rate schedule of every supervised run (its LambdaLR)."""
    made = []
    real = supervised.build_optimisation

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(supervised, "build_optimisation", spy)
    return made


def _factors(scheduler, steps: int) -> list[float]:
    return [scheduler.lr_lambdas[0](s) for s in range(steps)]


def test_a_budget_gives_the_supervised_baseline_the_schedule_of_the_amdim_arms(dark_and_bright, monkeypatch):
    config = _config(dark_and_bright, milestones=(1,), warmup_steps=4)  # 2 epochs of 6 updates, decay after one
    made = _schedules(monkeypatch)
    train_supervised(config, steps=5)
    amdim, steps = budget_config(config, 5)
    amdim_state = build_state(amdim, 2, torch.device("cpu"), steps_per_epoch(amdim))
    assert _factors(made[-1][1], steps) == _factors(amdim_state.scheduler, steps)
    # A tenth of the budget of warm-up (1 update, not the configured 4), then constant: no decay at update 6.
    assert _factors(made[-1][1], steps) == [1.0] * 5

    train_supervised(config)  # no budget: the configuration's own schedule, warm-up and decay included
    full = _factors(made[-1][1], 12)
    assert full == [lr_factor(s, 4, [6], config.gamma) for s in range(12)]
    assert full[0] == 0.25 and full[-1] == pytest.approx(config.gamma)


def test_supervised_training_learns_labels_and_its_features_probe_well(dark_and_bright):
    config = _config(dark_and_bright)
    pairs, test, n_classes = build_data(config, self_supervised=False)
    assert len(pairs) == 96 and len(test) == 48 and n_classes == 2
    encoder, summary = train_supervised(config, steps=12)
    assert summary["steps"] == 12 and summary["budget_steps"] == budget_config(config, None)[1] == 12
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
