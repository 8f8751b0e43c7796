"""Runs the workbook's notebooks headlessly with papermill, and bundles them into one HTML report.

Conventions every notebook follows: exactly one cell tagged `parameters` (with at least `preset`,
`output_dir` and `seed`), derived values in the next cell, and `<output_dir>/metrics.json` written with
the notebook's headline numbers. The executed copy lands beside it, errors included, so a failed run
can be read cell by cell. The report (`amdim_lib.ui.html_report`) leaves out cells tagged `scaffolding`
and folds those tagged `solution`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from traitlets.config import Config

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


def _kernel_transport():
    """The kernel talks to papermill over local sockets (IPC) where the system has them: nothing listens on
    the network, and ipykernel has no reason to warn on every notebook that its TCP traffic is unencrypted."""
    return Config({"KernelManager": {"transport": "tcp" if sys.platform == "win32" else "ipc"}})


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
                                   parameters={k: v for k, v in wanted.items() if k in declared},
                                   config=_kernel_transport())
    except PapermillExecutionError as error:
        raise NotebookError(f"{path.name} failed in cell [{error.exec_count}] ({error.ename}: {error.evalue}); "
                            f"the executed copy with the error is {executed}") from None
    metrics = output_dir / "metrics.json"
    if not metrics.exists():
        raise NotebookError(f"{path.name} ran but wrote no {metrics}")
    return json.loads(metrics.read_text())


FINISHED = "finished.json"  # written into a notebook's folder once it ran to its end: its parameters, its seconds


def select_notebooks(only: list[str] | None) -> list[Path]:
    """The notebooks named by `only` (numbers such as 04 or A1, or full stems), all when None; a name
    that matches none is refused with the list of names."""
    paths = notebooks()
    if only is None:
        return paths
    unknown = [name for name in only if not any(name in (p.stem, p.stem[:2]) for p in paths)]
    if unknown:
        raise ValueError(f"no notebook is called {', '.join(unknown)}; choose among "
                         f"{', '.join(p.stem[:2] for p in paths)} ({', '.join(p.stem for p in paths)})")
    return [p for p in paths if p.stem in only or p.stem[:2] in only]


def _finished(target: Path) -> dict | None:
    """What out_dir/<notebook>/finished.json records: the parameters it ran with and its seconds."""
    try:
        record = json.loads((target / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "parameters" in record else None


def last_timings(out_dir: str | Path) -> dict[str, float]:
    """Seconds of each notebook that finished in the workbook folder `out_dir` (a previous make demo)."""
    records = {path.stem: _finished(Path(out_dir) / path.stem) for path in notebooks()}
    return {stem: record["seconds"] for stem, record in records.items() if record and "seconds" in record}


def run_workbook(out_dir: str | Path, preset: str = "demo", only: list[str] | None = None, **parameters) -> dict:
    """Run the notebooks in order into out_dir/<notebook>/, then write out_dir/report.html and
    out_dir/metrics.json over every notebook finished there (a partial run merges into them).

    Notebooks after training receive `train_dir` (where 04_training left its checkpoint). Without
    `only`, a run stopped midway continues: the notebooks that finished with the same parameters are
    kept, up to the first that must run; every later one runs again (it may read what an earlier
    one wrote). `only` runs the notebooks it names. Prints one progress line per notebook; stops at
    the first failure with a NotebookError.
    """
    out_dir = Path(out_dir).resolve()
    paths = select_notebooks(only)
    wanted = {"preset": preset, "train_dir": str(out_dir / "04_training"), **parameters}
    continuing = only is None
    for number, path in enumerate(paths, 1):
        target = out_dir / path.stem
        if continuing and (_finished(target) or {}).get("parameters") == wanted:
            print(f"[{number}/{len(paths)}] {path.stem} kept: it finished earlier with these settings "
                  f"(--only {path.stem[:2]} runs it again)", flush=True)
            continue
        continuing = False
        (target / FINISHED).unlink(missing_ok=True)
        start = time.perf_counter()
        print(f"[{number}/{len(paths)}] {path.stem} ...", flush=True)
        run_notebook(path, target, **wanted)
        seconds = round(time.perf_counter() - start, 1)
        (target / FINISHED).write_text(json.dumps({"parameters": wanted, "seconds": seconds}, indent=2))
        print(f"[{number}/{len(paths)}] {path.stem} done in {seconds:.0f} s", flush=True)
    return write_summary(out_dir, preset)


def write_summary(out_dir: Path, preset: str) -> dict:
    """out_dir/metrics.json and out_dir/report.html over every notebook that finished in out_dir."""
    done = [p for p in notebooks() if _finished(out_dir / p.stem) is not None
            and (out_dir / p.stem / p.name).exists() and (out_dir / p.stem / "metrics.json").exists()]
    summary = {p.stem: json.loads((out_dir / p.stem / "metrics.json").read_text()) for p in done}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if done:
        write_report([out_dir / p.stem / p.name for p in done], out_dir / "report.html",
                     title=f"AMDIM workbook ({preset} preset)")
        print(f"report: {out_dir / 'report.html'}")
    return summary
