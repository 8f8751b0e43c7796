import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from amdim_lib.analysis import evaluate
from amdim_lib.ui import report
from amdim_lib.run.presets import get_config


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _records(n=30, log_every=2, epochs=(10, 20, 30)):
    out = []
    for i in range(1, n + 1):
        step = i * log_every
        out.append({"kind": "train", "step": step, "lr": 2e-4, "1t5": 7 - 0.05 * i, "1t7": 8 - 0.05 * i,
                    "5t5": 7.2 - 0.04 * i, "reg": 0.1, "loss": 22.3 - 0.14 * i, "probe_linear_acc": min(1, 0.1 + 0.02 * i),
                    "probe_mlp_acc": min(1, 0.1 + 0.025 * i), "images_per_s": 100.0})
        if step in epochs:
            out.append({"kind": "eval", "step": step, "epoch": epochs.index(step) + 1,
                        "test_linear_acc": 0.1 + 0.01 * i, "test_mlp_acc": 0.12 + 0.01 * i})
    return out


def _clusters(n_per_class=40, classes=4, d=16, spread=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), d)), y


# ----------------------------------------------------------------------------- training curves

def test_smooth_is_a_trailing_mean():
    assert np.allclose(report.smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    assert np.allclose(report.smooth([5, 5, 5], 10), [5, 5, 5])
    assert np.allclose(report.smooth([1, 2], 1), [1, 2])


def test_chance_losses_count_the_negatives():
    chance = report.chance_losses(batch_size=2)
    assert chance["1t5"] == pytest.approx(math.log(1 + 25)) and chance["1t7"] == pytest.approx(math.log(1 + 49))
    assert report.chance_losses(64)["5t5"] == pytest.approx(math.log(1 + 63 * 25))


def test_loss_and_probe_plots_draw_every_term():
    records = _records()
    fig = report.plot_losses(records, batch_size=64, milestone_steps=[40])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("1t5" in s for s in labels) and any("1t7" in s for s in labels) and any("5t5" in s for s in labels)
    assert any("γ" in s for s in labels), "the milestone inside the run is marked"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "chance 1t5, 5t5" in texts and "chance 1t7" in texts
    assert len(fig.axes) == 3  # NCE panel, total panel and its regulariser twin
    fig = report.plot_online_probes(records, n_classes=10)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "linear, test split (per epoch)" in labels and "chance (1/10)" in labels
    test_line = [l for l in fig.axes[0].lines if l.get_label() == "linear, test split (per epoch)"][0]
    assert list(test_line.get_xdata()) == [10, 20, 30]
    with pytest.raises(ValueError, match="no training records"):
        report.plot_losses([{"kind": "eval", "step": 1}])


def test_lr_schedule_plot():
    fig = report.plot_lr_schedule([0.5, 1, 1, 0.2], base_lr=2e-4, steps_per_epoch=2)
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [1e-4, 2e-4, 2e-4, 4e-5])


def test_training_metrics_prefers_measured_time():
    config = get_config("shapes", "smoke")
    records = _records()
    summary = {"steps": 60, "total_steps": 60, "finished": True, "seconds": 12.5, "images_per_s": 321.0}
    now = report.training_metrics(records, summary, config, "smoke", "cpu", trained_now=True)
    assert now["seconds"] == 12.5 and now["images_per_s"] == 321.0 and now["seconds_source"] == "measured"
    assert now["final_losses"]["1t5"] == pytest.approx(7 - 0.05 * 30) and set(now["final_losses"]) == {
        "1t5", "1t7", "5t5", "reg", "loss"}
    assert now["online_probe_test"] == {"test_linear_acc": pytest.approx(0.25), "test_mlp_acc": pytest.approx(0.27)}
    assert len(now["online_probe_test_per_epoch"]) == 3
    # Loaded: the previous execution's wall time when it describes the same run ...
    loaded = report.training_metrics(records, {**summary, "seconds": 0.1}, config, "smoke", "cpu", False, now)
    assert loaded["seconds"] == 12.5 and not loaded["trained_now"]
    # ... else an estimate from the logged throughput: 2 views x batch x steps / (images/s).
    estimated = report.training_metrics(records, {**summary, "seconds": 0.1}, config, "smoke", "cpu", False,
                                        {**now, "steps": 7})
    assert estimated["seconds"] == pytest.approx(2 * config.batch_size * 60 / 100.0)
    assert estimated["seconds_source"] == "estimated from the log"


# ----------------------------------------------------------------------------- label efficiency

def test_per_class_subset_is_balanced_and_seeded():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 8)
    idx = evaluate.per_class_subset(labels, 4, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [4, 3, 4] and len(set(idx)) == len(idx)
    again = evaluate.per_class_subset(labels, 4, np.random.default_rng(0))
    assert idx.tolist() == again.tolist()


def test_label_counts_stop_below_the_smallest_class():
    assert evaluate.label_counts(np.repeat(np.arange(3), 20), (1, 4, 16, 64)) == [1, 4, 16, None]
    assert evaluate.label_counts(np.repeat(np.arange(3), 4), (1, 4, 16)) == [1, None]


def test_separates_from_is_the_count_from_which_on_the_curves_stay_apart():
    def curve(means, std=0.01):
        return [{"per_class": n, "mean": m, "std": std} for n, m in zip((1, 4, 16, 64), means)]
    curves = {"t": curve([0.2, 0.5, 0.7, 0.8]), "r": curve([0.2, 0.3, 0.3, 0.35]), "p": curve([0.25, 0.2, 0.4, 0.45])}
    assert evaluate.separates_from(curves, "t", ("r", "p")) == 4
    curves["p"][2]["mean"] = 0.69  # within the spreads at 16: only 64 on counts
    assert evaluate.separates_from(curves, "t", ("r", "p")) == 64
    curves["p"][3]["mean"] = 0.9
    assert evaluate.separates_from(curves, "t", ("r", "p")) is None


def test_label_efficiency_rises_with_labels_on_separable_data():
    x, y = _clusters(n_per_class=60, spread=2.5)
    test_x, test_y = _clusters(n_per_class=50, spread=2.5, seed=0)
    test_x = test_x + 0.1 * np.random.default_rng(1).normal(size=test_x.shape)
    points = evaluate.label_efficiency(x, y, test_x, test_y, [1, 4, None], C=1.0, repeats=4, seed=0)
    assert [p["per_class"] for p in points] == [1, 4, 60] and [p["all"] for p in points] == [False, False, True]
    assert [p["n_labels"] for p in points] == [4, 16, 240]
    assert len(points[0]["accuracies"]) == 4 and len(points[-1]["accuracies"]) == 1
    assert points[-1]["mean"] > 0.9
    assert points[0]["mean"] < points[-1]["mean"], "one label per class is worse than all of them"
    reused = evaluate.label_efficiency(x, y, test_x, test_y, [None], all_accuracy=0.5)
    assert reused[0]["mean"] == 0.5 and reused[0]["n_labels"] == 240
    fig = report.plot_label_efficiency({"a": points, "b": points}, n_classes=4)
    assert fig.axes[0].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "4", "60\n(all)"]


# ----------------------------------------------------------------------------- embeddings and bars

def test_embed_2d_subsamples_per_class_and_keeps_clusters_apart():
    x, y = _clusters(n_per_class=50, classes=3, d=64, spread=0.3)
    xy, labels = evaluate.embed_2d(x, y, n_points=60, seed=0)
    assert xy.shape == (60, 2) and np.bincount(labels).tolist() == [20, 20, 20]
    # Each point's nearest neighbour in the plane has its class.
    dist = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(len(xy)) * 1e9
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    fig = report.plot_embeddings({"trained": (xy, labels), "random": (xy, labels)}, ["a", "b", "c"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    assert [ax.get_title() for ax in fig.axes] == ["trained", "random"]


def test_probe_results_plot_has_a_bar_per_feature_set_and_probe():
    results = {"AMDIM (trained)": {"linear": 0.8, "mlp": 0.85, "knn": 0.7}, "raw pixels": {"linear": 0.2, "knn": 0.3}}
    fig = report.plot_probe_results(results, n_classes=10)
    assert len(fig.axes[0].patches) == 6
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["linear probe", "MLP probe", "kNN (k=200)"]
    assert fig.axes[0].get_ylim()[0] == 0.0, "bars start at zero"
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.1 for line in fig.axes[0].lines), "chance line"


# ----------------------------------------------------------------------------- tables

def test_comparison_table_puts_the_paper_beside_a_run_of_the_same_encoder():
    results = {"AMDIM (trained)": {"linear": 0.5, "mlp": 0.6, "knn": 0.4}, "random init": {"linear": 0.3, "mlp": 0.3, "knn": 0.2}}
    compute = {"AMDIM (trained)": "cpu, 100 updates of batch 64, 60 s"}
    table = report.comparison_table("cifar10", results, compute, preset="paper", model="cifar")
    lines = table.splitlines()
    assert len(lines) == 2 + 1 + 2
    assert "**91.2**" in lines[2] and "CIFAR-10" in lines[2]
    assert "| AMDIM (trained) | CIFAR-10 | paper | cpu, 100 updates of batch 64, 60 s | 50.0 | 60.0 | 40.0 |" in table
    demo = report.comparison_table("cifar10", results, compute, preset="demo", model="demo")
    assert "no paper figure for CIFAR-10 with this encoder" in demo and "91.2" not in demo
    shapes = report.comparison_table("shapes", results, compute, preset="smoke")
    assert "no paper figure for Shapes" in shapes and "n/a" in shapes and "**" not in shapes


def test_run_compute_reads_the_best_source(tmp_path):
    config = get_config("shapes", "smoke")
    assert report.run_compute(tmp_path, config, {"steps": 5, "seconds": 3.0})["seconds"] == 3.0
    log = [{"kind": "train", "step": 16, "images_per_s": 64.0}, {"kind": "eval", "step": 16}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    estimated = report.run_compute(tmp_path, config, device="cpu")
    assert estimated["steps"] == 16 and estimated["seconds"] == pytest.approx(2 * 32 * 16 / 64.0)
    assert report.compute_text(estimated) == "cpu, 16 updates of batch 32, 16 s (estimated)"
    assert report.compute_text(estimated, planned=100).startswith("cpu, 16 of 100 updates")
    assert report.compute_text(estimated, planned=16).startswith("cpu, 16 updates")
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 16, "seconds": 500.0, "device": "cuda",
                                                       "preset": "demo", "seconds_source": "measured"}))
    saved = report.run_compute(tmp_path, config)
    assert saved["device"] == "cuda" and saved["preset"] == "demo" and saved["seconds"] == 500.0
    assert report.compute_text(saved) == "cuda, 16 updates of batch 32, 8.3 min"
    (tmp_path / "metrics.json").write_text('{"steps": 16, "seconds"')  # a torn file is an error, not "no file"
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        report.run_compute(tmp_path, config)


def test_format_seconds():
    assert report.format_seconds(None) == "?"
    assert report.format_seconds(42) == "42 s"
    assert report.format_seconds(600) == "10.0 min"
    assert report.format_seconds(3 * 3600) == "3.0 h"


def test_class_gathering_is_one_for_separate_clusters_and_near_chance_for_mixed_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    apart = rng.normal(size=(200, 2)) * 0.1 + labels[:, None] * 10
    assert all(share == 1.0 for share in evaluate.class_gathering(apart, labels).values())
    mixed = evaluate.class_gathering(rng.normal(size=(200, 2)), labels)
    assert set(mixed) == {0, 1, 2, 3} and all(0.1 < share < 0.45 for share in mixed.values())
