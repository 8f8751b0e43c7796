"""Notebooks 04 (training) and 05 (evaluation) and appendix A2 (engineering), executed at the smoke preset with
papermill."""

import json
import math

import nbformat
import pytest

from amdim_lib.run.presets import get_config, workbook_sizes
from amdim_lib.ui.workbook import NOTEBOOKS_DIR, run_notebook
from notebook_outputs import check_exercise_verdicts, stderr_of

TRAINING = NOTEBOOKS_DIR / "04_training.ipynb"
EVALUATION = NOTEBOOKS_DIR / "05_evaluation.ipynb"
ENGINEERING = NOTEBOOKS_DIR / "appendix" / "A2_engineering.ipynb"
FEATURE_SETS = ("trained", "random_init", "raw_pixels", "supervised")


@pytest.mark.parametrize("path", [TRAINING, EVALUATION])
def test_notebook_is_committed_clean_with_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("preset", "output_dir", "seed", "dataset", "device", "data_dir"):
        assert f"{name} =" in tagged[0].source
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("04_training")
    return out, run_notebook(TRAINING, out, preset="smoke")


def test_training_notebook_trains_and_reports(training_run):
    out, metrics = training_run
    assert metrics["dataset"] == "shapes" and metrics["preset"] == "smoke"
    assert metrics["trained_now"] and metrics["finished"] and metrics["steps"] == metrics["total_steps"] == 16
    assert metrics["seconds"] > 0 and metrics["images_per_s"] > 0 and metrics["seconds_source"] == "measured"
    # The optimiser's settings are rendered from the configuration, not typed into the prose.
    config = get_config("shapes", "smoke")
    assert metrics["lr"] == config.lr and f"= {config.lr:g}," in metrics["schedule_text"]
    assert f"$T_w$ = {config.warmup_steps} updates" in metrics["schedule_text"]
    losses = metrics["final_losses"]
    assert set(losses) == {"1t5", "1t7", "5t5", "reg", "loss"}
    assert losses["loss"] == pytest.approx(losses["1t5"] + losses["1t7"] + losses["5t5"] + losses["reg"], abs=1e-3)
    # Each NCE term lies between 0 and a little above its chance level log(1 + (B-1) L), B = 32.
    for task, locations in (("1t5", 25), ("1t7", 49), ("5t5", 25)):
        assert 0 < losses[task] < math.log(1 + 31 * locations) + 0.5, task
    assert [e["epoch"] for e in metrics["online_probe_test_per_epoch"]] == [1, 2]
    assert all(0 <= v <= 1 for v in metrics["online_probe_test"].values()) and len(metrics["online_probe_test"]) == 2
    for name in ("checkpoint.pt", "metrics.jsonl", "lr_schedule.png", "losses.png", "online_probes.png",
                 "04_training.ipynb"):
        assert (out / name).is_file(), name
    assert stderr_of(out / "04_training.ipynb") == [], "no warnings or stray output on stderr"
    assert check_exercise_verdicts(out / "04_training.ipynb") == 4


def test_evaluation_notebook_on_the_training_run(training_run, tmp_path):
    train_dir, trained = training_run
    metrics = run_notebook(EVALUATION, tmp_path, preset="smoke", train_dir=str(train_dir))
    assert metrics["run"]["steps"] == trained["steps"] and metrics["run"]["preset"] == "smoke"
    assert metrics["paper_linear"] is None and metrics["n_classes"] == 10
    for name in FEATURE_SETS:
        assert set(metrics["accuracy"][name]) == {"linear", "mlp", "knn"}
        assert all(0 <= v <= 1 for v in metrics["accuracy"][name].values()), name
    # 16 updates at the smoke preset learn little; a probe that is broken (wrong labels, wrong split
    # order) lands far from chance (0.1) on 128 test images, so a loose floor still catches it.
    assert metrics["accuracy"]["trained"]["linear"] >= 0.05
    assert metrics["accuracy"]["raw_pixels"]["linear"] <= 0.3, "raw pixels do not reveal the shape"
    supervised = metrics["supervised"]
    assert supervised["steps"] == supervised["budget_steps"] == 16 and supervised["fraction"] == 1.0
    assert 0 <= supervised["test_acc"] <= 1
    assert metrics["probe_train_size"] == 256 and metrics["probe_test_size"] == 128
    # The order stated in section 7 is the order of the measured linear-probe accuracies.
    order = metrics["linear_order"]
    assert sorted(order) == ["random_init", "raw_pixels", "trained"]
    assert [metrics["accuracy"][n]["linear"] for n in order] == sorted((metrics["accuracy"][n]["linear"] for n in order), reverse=True)
    for name in ("trained", "random_init", "raw_pixels"):
        points = metrics["label_efficiency"][name]
        per_class = [p["per_class"] for p in points]
        assert per_class == sorted(per_class) and per_class[0] == 1 and points[-1]["all"]
        assert points[-1]["n_labels"] == metrics["probe_train_size"]
        assert points[-1]["mean"] == pytest.approx(metrics["accuracy"][name]["linear"])
        assert points[-1]["mean"] >= points[0]["mean"] - 0.1, f"{name}: all labels do not do worse than one"
    assert set(metrics["tsne_neighbour_share"]) == {"AMDIM (trained)", "random init"}
    assert all(0 <= share <= 1 for share in metrics["tsne_neighbour_share"].values())
    separated = metrics["label_efficiency_separates_from"]
    assert separated is None or separated in [p["per_class"] for p in metrics["label_efficiency"]["trained"]]
    table = (tmp_path / "comparison.md").read_text()
    assert "n/a" in table and "smoke" in table and "16 updates" in table
    for name in ("probes.png", "label_efficiency.png", "tsne.png", "supervised.pt"):
        assert (tmp_path / name).is_file(), name
    assert stderr_of(tmp_path / "05_evaluation.ipynb") == [], "no warnings or stray output on stderr"
    assert check_exercise_verdicts(tmp_path / "05_evaluation.ipynb") == 4


def test_training_notebook_loads_a_finished_run(training_run):
    out, first = training_run
    again = run_notebook(TRAINING, out, preset="smoke")
    assert not again["trained_now"] and again["steps"] == first["steps"]
    assert again["seconds"] == first["seconds"], "the wall time of the run that trained is kept"
    assert again["final_losses"] == first["final_losses"]
    assert json.loads((out / "metrics.json").read_text())["trained_now"] is False


def test_engineering_appendix_resumes_exactly_and_guards_its_folders(tmp_path):
    notebook = nbformat.read(ENGINEERING, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'output_dir = "../../runs/demo/A2_engineering"' in parameters.source and "seed =" in parameters.source
    assert all(not c.outputs and c.execution_count is None for c in notebook.cells if c.cell_type == "code")
    m = run_notebook(ENGINEERING, tmp_path, preset="smoke")
    sizes = workbook_sizes("A2", "smoke")
    steps = sizes["train"]["train_size"] // sizes["train"]["batch_size"] * sizes["train"]["epochs"]
    assert m["preset"] == "smoke" and m["steps"] == m["resumed_steps"] == steps
    assert m["stopped_at"] == sizes["stop_at"] < steps
    assert m["resumed_equals_uninterrupted"], "a resumed run ends with the weights of an uninterrupted one"
    assert m["logged_steps"] == list(range(1, steps + 1)), "the resumed log holds each update once"
    assert {"checkpoint.pt", "config.json", "metrics.jsonl"} <= set(m["run_files"])
    assert "--resume" in m["refusals"]["neither resume nor overwrite"]
    assert "different configuration" in m["refusals"]["resume with another learning rate"]
    assert m["overwrite_seed"] == 1, "overwrite trained anew with the new configuration"
    assert stderr_of(tmp_path / ENGINEERING.name) == [], "no warnings or stray output on stderr"
