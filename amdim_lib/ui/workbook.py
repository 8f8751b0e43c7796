"""Runs the workbook's notebooks headlessly with papermill, and bundles them into one HTML report.

Conventions every notebook follows: exactly one cell tagged `parameters` (with at least `preset`,
`output_dir` and `seed`), derived values in the next cell, and `<output_dir>/metrics.json` written with
the notebook's headline numbers. The executed copy lands beside it, errors included, so a failed run
can be read cell by cell. The report (`amdim_lib.ui.html_report`) leaves out cells tagged `scaffolding`
and folds those tagged `solution`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .html_report import write_report

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the executed copy."""


def notebooks(directory: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The workbook's notebooks in reading order: the main path (NN_name.ipynb), then the appendices
    for the curious (appendix/AN_name.ipynb)."""
    return sorted(directory.glob("[0-9][0-9]_*.ipynb")) + sorted(directory.glob("appendix/A[0-9]_*.ipynb"))


def declared_parameters(path: Path) -> set[str]:
    import papermill  # lazy: slow to import; only running a notebook needs it
    return set(papermill.inspect_notebook(str(path)))


def run_notebook(path: str | Path, output_dir: str | Path, preset: str = "demo", **parameters) -> dict:
    """Execute one notebook into `output_dir` and return its metrics.json.

    Only parameters the notebook declares are passed (others are dropped), so one call can hand the
    same shared settings (dataset, device, seed, ...) to every notebook.
    """
    import papermill  # lazy: slow to import; only running a notebook needs it
    from papermill.exceptions import PapermillExecutionError  # lazy: part of papermill, slow to import

    path, output_dir = Path(path).resolve(), Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / path.name
    wanted = {"preset": preset, "output_dir": str(output_dir), **parameters}
    declared = declared_parameters(path)
    try:
        papermill.execute_notebook(str(path), str(executed), cwd=str(path.parent), progress_bar=False,
                                   parameters={k: v for k, v in wanted.items() if k in declared})
    except PapermillExecutionError as error:
        raise NotebookError(f"{path.name} failed in cell [{error.exec_count}] ({error.ename}: {error.evalue}); "
                            f"the executed copy with the error is {executed}") from None
    metrics = output_dir / "metrics.json"
    if not metrics.exists():
        raise NotebookError(f"{path.name} ran but wrote no {metrics}")
    return json.loads(metrics.read_text())


def run_workbook(out_dir: str | Path, preset: str = "demo", only: list[str] | None = None, **parameters) -> dict:
    """Run every notebook in order into out_dir/<notebook>/, then write out_dir/report.html.

    Notebooks after training receive `train_dir` (where 04_training left its checkpoint).
    Prints one progress line per notebook; stops at the first failure with a NotebookError.
    """
    out_dir = Path(out_dir).resolve()
    paths = [p for p in notebooks() if only is None or p.stem in only or p.stem[:2] in only]
    summary, executed = {}, []
    for number, path in enumerate(paths, 1):
        target = out_dir / path.stem
        start = time.perf_counter()
        print(f"[{number}/{len(paths)}] {path.stem} ...", flush=True)
        summary[path.stem] = run_notebook(path, target, preset=preset,
                                          train_dir=str(out_dir / "04_training"), **parameters)
        executed.append(target / path.name)
        print(f"[{number}/{len(paths)}] {path.stem} done in {time.perf_counter() - start:.0f} s", flush=True)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if executed:
        write_report(executed, out_dir / "report.html", title=f"AMDIM workbook ({preset} preset)")
        print(f"report: {out_dir / 'report.html'}")
    return summary
