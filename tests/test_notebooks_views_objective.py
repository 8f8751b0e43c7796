"""Runs notebooks 01_views and 03_amdim_objective at the smoke preset and checks their headline numbers."""

from pathlib import Path

import nbformat
import pytest

from amdim_lib.ui import exercises
from amdim_lib.run.presets import MODEL_SIZES
from amdim_lib.ui.workbook import NOTEBOOKS_DIR, run_notebook
from notebook_outputs import check_exercise_verdicts, stderr_of

VIEWS = NOTEBOOKS_DIR / "01_views.ipynb"
OBJECTIVE = NOTEBOOKS_DIR / "03_amdim_objective.ipynb"


def _pngs(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*.png")}


@pytest.mark.parametrize("path", [VIEWS, OBJECTIVE])
def test_notebook_is_committed_clean_with_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("preset", "output_dir", "seed"):
        assert f"{name} =" in tagged[0].source
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert notebook.metadata.kernelspec.name == "python3"


def test_views_notebook_smoke(tmp_path):
    m = run_notebook(VIEWS, tmp_path, preset="smoke")
    assert m["preset"] == "smoke" and m["n_view_pairs"] >= 100
    for policy in ("cifar", "stl10", "imagenet"):
        d = m["mean_view_difference"][policy]
        # No augmentation (with or without the shared flip): identical views. The full policy differs more
        # than its geometric part alone, and clearly from zero.
        assert d["none"] == 0.0 and d["flip"] == 0.0
        assert d["full"] > d["crop"] > 0.02 and d["full"] > 0.1
    rf = m["receptive_fields"]
    assert rf["32"]["r7"] == {"size": 8, "jump": 4, "offset": 0, "grid": 7}
    assert rf["32"]["r5"]["size"] == 16 and rf["64"]["r7"]["size"] == 16 and rf["128"]["r7"]["size"] == 35
    assert all(m["r1_covers_image"].values()) and len(m["r1_covers_image"]) == 3
    # The exercises' answers are the fields the notebook reports.
    assert rf["64"]["r5"]["size"] == exercises.expected("receptive_field", image_size=64, feature="r5")
    shares = {p: d[p]["crop"] / d[p]["full"] for p, d in [(p, m["mean_view_difference"]) for p in ("cifar", "imagenet")]}
    assert exercises.expected("geometry_share", measured=shares) == max(shares, key=shares.get)
    assert all(m["r7_gradient_matches_box"].values()) and len(m["r7_gradient_matches_box"]) == 3
    # The inspector was driven from code: policy stl10 (64 px views), resampled once from seed 0.
    assert m["inspector"]["policy"] == "stl10" and m["inspector"]["seed"] == 1
    assert m["inspector"]["view_shape"] == [64, 64, 3] and m["inspector"]["mean_difference"] > 0.05
    expected = {"source_images", "views_cifar", "views_stl10", "views_imagenet", "augmentations_imagenet",
                "augmentations_cifar", "view_difference", "receptive_fields", "inspector"}
    assert {f"{name}.png" for name in expected} <= _pngs(tmp_path)
    assert not stderr_of(tmp_path / VIEWS.name), "the notebook printed warnings"
    assert check_exercise_verdicts(tmp_path / VIEWS.name) == 4


def test_objective_notebook_smoke(tmp_path):
    m = run_notebook(OBJECTIVE, tmp_path, preset="smoke")
    assert m["preset"] == "smoke" and m["batch"] == 8
    # The batched library loss equals the loop-by-loop reference (float64).
    assert m["library_vs_slow_max_abs_diff"] < 1e-5
    for key in ("1t5", "1t7", "5t5", "reg", "loss"):
        assert m["library_loss"][key] == pytest.approx(m["slow_loss"][key], abs=1e-5)
    assert m["time_slow_ms"] > m["time_library_ms"]
    # Shapes and parameter counts of the paper's models (DESIGN.md).
    assert m["parameters"]["paper, small CIFAR (32 px)"] == 20_033_024  # the official code's 128/1024/3
    assert m["parameters"]["official README, ImageNet (128 px)"] == 208_419_264  # 192/1536/8 at 128 px
    d = MODEL_SIZES["stl10"]["n_rkhs"]  # 64 px inputs reach the same 1x1, 5x5 and 7x7 grids as 32 px
    assert m["feature_shapes"]["paper, STL-10 (64 px)"] == {"r1": [d, 1, 1], "r5": [d, 5, 5], "r7": [d, 7, 7]}
    assert m["parameters"]["paper, ImageNet (128 px)"] == 665_747_520  # 320/2560/10, the released AMDIM-Large
    # Clipping bounds the loss as scores grow; without it the loss keeps growing; the regulariser grows ~ s^2.
    sweep = m["clip_sweep"]
    assert sweep["no clipping"][-1] > sweep["c = 20"][-1] > sweep["c = 5"][-1]
    assert sweep["logit_reg"][-1] == pytest.approx(sweep["logit_reg"][0] * sweep["scales"][-1] ** 2, rel=1e-3)
    # The short training lowers the loss of the fixed held-out batch, most clearly in 5->5.
    assert m["train_steps"] == 16
    assert m["loss_decreased"] and m["loss_after"]["loss"] < m["loss_before"]["loss"] - 0.1
    assert m["loss_after"]["5t5"] < m["loss_before"]["5t5"]
    assert 0 < m["logit_reg_init"] < 10
    expected = {"batch_views", "scores_untrained", "prediction_tasks", "tanh_clip", "score_histograms", "clip_sweep",
                "training_loss", "scores_before_after"}
    assert {f"{name}.png" for name in expected} <= _pngs(tmp_path)
    assert (tmp_path / "short_training" / "metrics.jsonl").exists()
    assert not stderr_of(tmp_path / OBJECTIVE.name), "the notebook printed warnings"
    assert check_exercise_verdicts(tmp_path / OBJECTIVE.name) == 4
