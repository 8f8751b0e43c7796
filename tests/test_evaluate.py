import numpy as np
import pytest
import torch

from amdim_lib.run.build import build_encoder, build_splits, eval_dataset
from amdim_lib.core.encoder import Encoder
from amdim_lib.analysis.evaluate import (evaluate_features, extract_features, knn_accuracy, linear_probe, mlp_probe,
                                probe_encoder, probe_table)
from amdim_lib.run.presets import get_config


def _clusters(n=300, d=8, classes=3, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 3
    y = rng.integers(0, classes, n)
    return centres[y] + spread * rng.normal(size=(n, d)), y


def test_probes_separate_clusters_and_fail_on_noise():
    x, y = _clusters(seed=0)
    test_x, test_y = _clusters(n=200, seed=0)  # same centres (same seed), fresh draws below
    rng = np.random.default_rng(1)
    test_x = test_x + 0.1 * rng.normal(size=test_x.shape)
    assert linear_probe(x, y, test_x, test_y)["accuracy"] > 0.95
    assert knn_accuracy(x, y, test_x, test_y, k=20) > 0.95
    assert mlp_probe(x, y, test_x, test_y, hidden=32)["accuracy"] > 0.9
    noise_x = rng.normal(size=(300, 8))
    assert linear_probe(noise_x, y, rng.normal(size=(200, 8)), test_y)["accuracy"] < 0.6


def test_linear_probe_chooses_c_on_held_out_training_data():
    x, y = _clusters()
    result = linear_probe(x, y, x[:50], y[:50], Cs=(0.01, 1.0))
    assert result["chosen"] in (0.01, 1.0) and set(result["validation"]) == {0.01, 1.0}


def test_a_probe_on_too_few_labelled_images_says_what_it_needs():
    x, y = _clusters(n=40, classes=10)
    with pytest.raises(ValueError, match="40 labelled images over 10 classes.*at least 100 images"):
        linear_probe(x, y, x, y)
    x, y = _clusters(n=300, classes=3)
    y[0] = 7  # a class with a single image
    with pytest.raises(ValueError, match="smallest class has 1"):
        linear_probe(x, y, x, y)


def test_extract_features_uses_eval_mode_and_restores_it():
    encoder = Encoder(32, 8, 64, 1, use_bn=True).train()
    data = [(torch.randn(3, 32, 32), i % 2) for i in range(10)]
    feats, labels = extract_features(encoder, data, batch_size=4)
    assert feats.shape == (10, 64) and labels.tolist() == [i % 2 for i in range(10)]
    assert encoder.training, "the caller's mode is restored"
    # Eval mode: BN uses running statistics, so an image's feature does not depend on its batch.
    alone, _ = extract_features(encoder, data[:1], batch_size=1)
    assert np.allclose(alone[0], feats[0], atol=1e-5)
    pixels, _ = extract_features(None, data)
    assert pixels.shape == (10, 3 * 32 * 32)


def test_probe_table_and_evaluate_features():
    x, y = _clusters()
    result = evaluate_features(x, y, x, y)
    assert set(result) == {"linear", "knn"}
    table = probe_table({"a": result, "b": result})
    assert table.count("\n") == 3 and "linear acc. (%)" in table


def test_probe_encoder_reads_the_capped_labelled_splits_through_the_test_transform():
    config = get_config("shapes", "smoke", train_size=200, test_size=60, seed=3)
    torch.manual_seed(0)
    encoder = build_encoder(config)
    result = probe_encoder(encoder, config, train_limit=128, test_limit=1000)
    assert (result["n_train"], result["n_test"]) == (128, 60), "a cap keeps at most that many, never adds"
    assert set(result) == {"linear", "knn", "n_train", "n_test"}
    train_x, train_y, test_x, test_y = (array for split in build_splits(config.replace(train_size=128))
                                        for array in extract_features(encoder, eval_dataset(split, config)))
    assert result["linear"] == linear_probe(train_x, train_y, test_x, test_y, seed=3)["accuracy"]
    assert result["knn"] == knn_accuracy(train_x, train_y, test_x, test_y)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_with_a_single_class_neighbourhood(k):
    train_x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert knn_accuracy(train_x, np.array([0, 1]), np.array([[2.0, 0.1]]), np.array([0]), k=k) == 1.0
