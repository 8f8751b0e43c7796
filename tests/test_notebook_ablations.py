"""06_ablations.ipynb at the smoke preset: the sweep's table, its figure and metrics.json, and a re-run
that loads every finished run instead of training it again."""

import time

import nbformat
import pytest

from amdim_lib.analysis.sweep import sweep_scale
from amdim_lib.ui.workbook import NOTEBOOKS_DIR, run_notebook
from notebook_outputs import check_exercise_verdicts, stderr_of

NOTEBOOK = NOTEBOOKS_DIR / "06_ablations.ipynb"
SMOKE_VARIANTS = set(sweep_scale("smoke")["variants"])


def test_notebook_is_committed_clean_with_one_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("dataset", "preset", "data_dir", "cifar_dir", "output_dir", "device", "seed", "seeds", "variants",
                 "steps"):
        assert f"{name} =" in tagged[0].source, name
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert not any("def " in c.source for c in code if "def run(" not in c.source), "no maths defined in the notebook"


def test_ablation_notebook_runs_the_sweep_and_reports(tmp_path):
    start = time.perf_counter()
    metrics = run_notebook(NOTEBOOK, tmp_path, preset="smoke")
    seconds = time.perf_counter() - start
    assert seconds < 90, f"the smoke preset took {seconds:.0f} s"

    assert metrics["dataset"] == "shapes" and metrics["preset"] == "smoke" and metrics["seeds"] == [0, 1]
    assert set(metrics["variants"]) == SMOKE_VARIANTS and {"dim_baseline", "supervised"} <= SMOKE_VARIANTS
    for name, row in metrics["variants"].items():
        assert row["seeds"] == [0, 1] and row["diverged"] == 0, name
        for key in ("linear_mean", "knn_mean"):
            assert 0 <= row[key] <= 1, (name, key)
        assert row["linear_std"] >= 0 and row["knn_std"] >= 0
        assert all(0 <= v <= 1 for v in row["linear_values"]) and len(row["linear_values"]) == 2
    compared = {c["variant"] for c in metrics["comparisons"] if c["reference"] == "full"}
    assert compared == SMOKE_VARIANTS - {"full"}
    assert set(metrics["significant"]) <= compared | {f"{c['variant']} vs {c['reference']}" for c in metrics["comparisons"]}
    assert "sd" in metrics["rule"]
    assert metrics["chance"] == pytest.approx(0.1) and metrics["cifar10_folder"] is None
    steps = sweep_scale("smoke")["steps"]
    assert metrics["total_steps"] == metrics["steps_trained_now"] == steps * 2 * (len(SMOKE_VARIANTS) - 1)
    assert (tmp_path / "ablations.png").is_file()
    assert len(list((tmp_path / "shapes").glob("*/seed*/result.json"))) == 2 * len(SMOKE_VARIANTS)
    executed = nbformat.read(tmp_path / "06_ablations.ipynb", as_version=4)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in executed.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
    assert "| dim_baseline |" in shown and "| supervised |" in shown and "points" in shown
    # The verdict is rendered from this run's comparisons, whatever they are.
    assert f"{len(metrics['significant'])} of {len(metrics['comparisons'])} comparisons exceed their spread" in shown
    assert stderr_of(tmp_path / "06_ablations.ipynb") == [], "no warnings or stray output on stderr"
    assert check_exercise_verdicts(tmp_path / "06_ablations.ipynb") == 4

    again = run_notebook(NOTEBOOK, tmp_path, preset="smoke")
    assert again["steps_trained_now"] == 0 and again["trained_now"] == 0, "finished runs are loaded, not retrained"
    assert again["variants"] == metrics["variants"]
