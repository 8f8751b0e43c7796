"""Workbook-wide conventions, and the runner's behaviour when a notebook fails."""

import json

import nbformat
import pytest

from amdim_lib.ui.html_report import notebook_title, write_report
import amdim_lib.ui.workbook as workbook
from amdim_lib.ui.workbook import NotebookError, notebooks, run_notebook


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_every_notebook_is_committed_clean_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{path.name} carries outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    for name in ("preset", "output_dir", "seed"):
        assert f"{name} =" in tagged[0].source, f"{path.name}'s parameters cell lacks {name}"
    assert nb.metadata.kernelspec.name == "python3"


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('preset = "demo"\noutput_dir = "."\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_names_its_cell_and_keeps_the_executed_copy(tmp_path):
    path = _notebook(tmp_path / "99_broken.ipynb", ["x = 1", "raise ValueError('bad input here')"])
    # [4]: the execution count shown in the executed copy (papermill adds the injected-parameters cell)
    with pytest.raises(NotebookError, match=r"99_broken.ipynb failed in cell \[4\].*ValueError.*bad input here"):
        run_notebook(path, tmp_path / "out", preset="smoke")
    executed = nbformat.read(tmp_path / "out" / "99_broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))


def test_the_kernel_runs_quietly_over_local_sockets(tmp_path, capfd):
    path = _notebook(tmp_path / "97_quiet.ipynb", [
        "import json, os\nos.makedirs(output_dir, exist_ok=True)\n"
        "json.dump({}, open(os.path.join(output_dir, 'metrics.json'), 'w'))"])
    run_notebook(path, tmp_path / "out", preset="smoke")
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "without encryption" not in captured.err, captured.err[-500:]


def test_run_notebook_passes_declared_parameters_and_reads_metrics(tmp_path):
    path = _notebook(tmp_path / "98_ok.ipynb", [
        "import json, os\nos.makedirs(output_dir, exist_ok=True)\n"
        "json.dump({'preset': preset, 'seed': seed}, open(os.path.join(output_dir, 'metrics.json'), 'w'))"])
    metrics = run_notebook(path, tmp_path / "out", preset="smoke", seed=3, undeclared="dropped")
    assert metrics == {"preset": "smoke", "seed": 3}
    report = write_report([tmp_path / "out" / "98_ok.ipynb"], tmp_path / "report.html")
    assert "<html" in report.read_text().lower()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["seed"] == 3


@pytest.mark.parametrize("heading, title", [("# 01 · Views of a shared context", "Views of a shared context"),
                                            ("# 4. Training AMDIM", "Training AMDIM"),
                                            ("# 3D shapes", "3D shapes"),
                                            ("# A1 · Appendix: estimators", "Appendix: estimators")])
def test_notebook_title_is_the_first_heading_without_its_number(tmp_path, heading, title):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell(f"{heading}\n\nText.\n\n# Later")]
    nbformat.write(nb, tmp_path / "05_any.ipynb")
    assert notebook_title(tmp_path / "05_any.ipynb") == title


def test_write_report_needs_at_least_one_notebook(tmp_path):
    with pytest.raises(ValueError, match="at least one executed notebook"):
        write_report([], tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_a_bad_notebook_parameter_is_named_before_any_work(tmp_path):
    # papermill -p seed abc: the notebook stops in the cell after its parameters, naming the value.
    with pytest.raises(NotebookError, match=r"seed='abc'"):
        run_notebook(notebooks()[1], tmp_path / "out", preset="smoke", seed="abc")
    with pytest.raises(NotebookError, match=r"unknown preset 'quick'"):
        run_notebook(notebooks()[1], tmp_path / "out", preset="quick")


def _fake_runs(monkeypatch, ran, fail_at=None):
    """run_notebook stand-in: copies the committed notebook and writes a metrics.json, or fails."""
    def fake(path, output_dir, **parameters):
        if path.stem[:2] == fail_at:
            raise NotebookError(f"{path.name} failed")
        ran.append(path.stem[:2])
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / path.name).write_text(path.read_text())
        (output_dir / "metrics.json").write_text(json.dumps({"notebook": path.stem, **parameters}))
        return {}
    monkeypatch.setattr(workbook, "run_notebook", fake)
    monkeypatch.setattr(workbook, "write_report", lambda paths, out, title: out.write_text("\n".join(p.stem for p in paths)))


def test_a_demo_stopped_midway_keeps_what_finished_and_a_partial_run_merges_into_the_report(tmp_path, monkeypatch):
    ran = []
    _fake_runs(monkeypatch, ran, fail_at="04")
    with pytest.raises(NotebookError):
        workbook.run_workbook(tmp_path, preset="smoke")
    assert ran == ["00", "01", "02", "03"]
    _fake_runs(monkeypatch, ran)
    ran.clear()
    workbook.run_workbook(tmp_path, preset="smoke")
    assert ran[0] == "04" and len(ran) == len(notebooks()) - 4, "the finished notebooks are kept"
    everything = json.loads((tmp_path / "metrics.json").read_text())
    ran.clear()
    workbook.run_workbook(tmp_path, preset="smoke", only=["00"])
    assert ran == ["00"]
    assert json.loads((tmp_path / "metrics.json").read_text()).keys() == everything.keys(), "the other sections stay"
    assert (tmp_path / "report.html").read_text().splitlines() == [p.stem for p in notebooks()]
    timings = workbook.last_timings(tmp_path)
    assert set(timings) == {p.stem for p in notebooks()} and all(s >= 0 for s in timings.values())
    ran.clear()
    workbook.run_workbook(tmp_path, preset="demo")  # other settings: nothing finished with them
    assert len(ran) == len(notebooks())


def test_a_notebook_name_that_matches_none_is_refused_with_the_names(tmp_path):
    with pytest.raises(ValueError, match=r"no notebook is called 99; choose among 00, 01, .*A1"):
        workbook.run_workbook(tmp_path, only=["04", "99"])
    assert not any(tmp_path.iterdir())


def test_the_demo_command_refuses_an_unknown_notebook_in_one_line(tmp_path):
    from amdim_lib.__main__ import main
    with pytest.raises(SystemExit, match=r"^error: no notebook is called 99; choose among"):
        main(["demo", "--only", "99", "--out", str(tmp_path / "demo")])
