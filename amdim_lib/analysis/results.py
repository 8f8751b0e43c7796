"""The results table: our accuracies beside the paper's, one row per run, produced from the runs' files.

    from amdim_lib.analysis.results import table_from_runs
    print(table_from_runs(["runs/cifar10-paper", "runs/stl10-paper", "runs/imagenet-to-places205"]))

A run directory is what `python -m amdim_lib train` / `eval` write: `config.json` (what was trained),
`eval.json` (frozen-feature probes: {feature set: {probe: accuracy}}), `eval_info.json` (what `eval`
evaluated, e.g. a transfer to another data set) and `metrics.jsonl` (the online probes). Rows can
also be made directly with `row(...)`, e.g. from a notebook's metrics.json. Accuracies are fractions
in [0, 1] everywhere and printed in %. Every markdown table of the library is drawn by `markdown_table`.
A run file that exists but does not parse is an error naming it (`checkpoints.read_json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from ..run.checkpoints import read_json, read_jsonl
from ..run.presets import MODEL_SIZES, get_config, model_size_name
from ..run.runfolder import RunFolder, stale_evaluation

# Linear-evaluation accuracies (%) reported for AMDIM, and the encoder (MODEL_SIZES) each was measured with:
# CIFAR-10/100 and STL-10 from the paper (its large models); ImageNet and Places205 from the official code's
# README (AMDIM-Large; Places205: the ImageNet encoder's features probed on Places205, i.e. transfer).
PAPER_LINEAR = {"cifar10": 91.2, "cifar100": 70.2, "stl10": 94.2, "imagenet": 68.1, "places205": 55.0}
PAPER_MODEL = {"cifar10": "cifar", "cifar100": "cifar", "stl10": "stl10", "imagenet": "imagenet", "places205": "imagenet"}
DISPLAY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "imagenet": "ImageNet",
           "places205": "Places205", "shapes": "Shapes", "folder": "image folder"}
PROTOCOL = ("Ours: frozen r1 features with the test transform; linear = logistic regression on standardised "
            "features (C chosen on a held-out 10% of the training split), MLP = one hidden layer, kNN = cosine, "
            "k=200, temperature-weighted; 'online' = the probes trained alongside the encoder. Paper: linear "
            "evaluation as reported (CIFAR/STL-10: large model; ImageNet, Places205: official README, "
            "Places205 by transfer from ImageNet), shown only beside a run of the same encoder.")


PAPER_SOURCE = {"cifar10": "paper (large model)", "cifar100": "paper (large model)", "stl10": "paper (large model)",
                "imagenet": "official README (AMDIM-Large)", "places205": "official README (transfer from ImageNet)"}


def paper_results_table() -> str:
    """Markdown: what AMDIM achieved (PAPER_LINEAR), each with the encoder it was measured with."""
    rows = []
    for key in ("imagenet", "places205", "stl10", "cifar10", "cifar100"):
        size = MODEL_SIZES[PAPER_MODEL[key]]
        image = get_config(key, "paper").image_size
        rows.append([DISPLAY[key], f"{PAPER_LINEAR[key]:.1f}", f"{image} px, {_encoder_text(size)}", PAPER_SOURCE[key]])
    return markdown_table(["data set", "linear (%)", "encoder", "source"], rows, "lrll")


PHOTO_RESULT = Path(__file__).with_name("photo_result.json")  # written by benchmarks/photo_recipe.py


def photo_result(path: str | Path = PHOTO_RESULT) -> dict | None:
    """The committed result of the photograph recipe (the demo preset of the photograph data sets on a
    CIFAR-10 image folder, probed frozen beside its baselines), or None where the file is absent."""
    return read_json(Path(path))


def _encoder_text(sizes: dict) -> str:
    return f"ndf {sizes['ndf']}, n_rkhs {sizes['n_rkhs']}, depth {sizes['n_depth']}"


def scales_table(run: dict, photo: dict | None = None) -> str:
    """Markdown: this run, the committed photograph result and the paper's CIFAR-10 figure, one row each
    with its encoder and budget, so that none is read as like-for-like with another. run: name, encoder
    sizes (ndf, n_rkhs, n_depth), budget text, and linear accuracies (fractions) of "trained", "random
    init" and "raw pixels"."""
    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    rows = [[run["name"], _encoder_text(run), run["budget"], *(pct(run.get(k)) for k in ("trained", "random init", "raw pixels"))]]
    if photo is not None:
        accuracy = photo["accuracy"]
        budget = (f"{photo['updates']:,} updates of batch {photo['batch_size']}, "
                  f"{photo['train_seconds'] / 60:.0f} min on {photo['cpu']}"
                  + (f" ({photo['precision']})" if photo.get("precision") else ""))
        rows.append([f"{photo['data']}, committed result (seed {photo['seed']})", _encoder_text(photo["model"]), budget,
                     *(pct(accuracy.get(k, {}).get("linear")) for k in ("AMDIM (trained)", "random init", "raw pixels"))])
    rows.append([f"{DISPLAY['cifar10']}, the paper", _encoder_text(MODEL_SIZES[PAPER_MODEL["cifar10"]]),
                 "hundreds of GPU epochs", f"{PAPER_LINEAR['cifar10']:.1f}", "–", "–"])
    return markdown_table(["data", "encoder", "budget", "trained, linear (%)", "random init (%)", "raw pixels (%)"],
                          rows, "lllrrr")


def paper_key(dataset: str, data_dir: str | None = None) -> str | None:
    """The paper data set a run's data matches: its name, or for an image folder the name of the
    folder (e.g. '.../cifar10-subset' -> 'cifar10'); None when the paper has no such figure."""
    if dataset in PAPER_LINEAR:
        return dataset
    if dataset == "folder" and data_dir:
        squashed = Path(str(data_dir)).name.lower().replace("-", "").replace("_", "")
        for key in sorted(PAPER_LINEAR, key=len, reverse=True):  # cifar100 before cifar10
            if squashed.startswith(key):
                return key
    return None


def paper_figure(key: str | None, model: str | None) -> float | None:
    """The paper's linear figure for data set `key` when it was measured with encoder `model`, else None:
    a run is compared with the paper's figure for the same model, never another one."""
    return PAPER_LINEAR[key] if key in PAPER_LINEAR and model == PAPER_MODEL[key] else None


def paper_reference(dataset: str, data_dir: str | None = None, model: str | None = None) -> tuple[str, float | None]:
    """(readable data-set name, the paper's linear-evaluation accuracy in % for encoder `model` (a
    MODEL_SIZES name), or None when the paper has no figure for that data set and model). An image folder
    is matched by its directory name (`paper_key`)."""
    key = paper_key(dataset, data_dir)
    if key is not None:
        return DISPLAY[key], paper_figure(key, model)
    if dataset == "folder" and data_dir:
        return f"image folder {Path(str(data_dir)).name}", None
    return DISPLAY.get(dataset, dataset), None


def row(dataset: str, linear: float | None = None, mlp: float | None = None, knn: float | None = None,
        run: str = "", setting: str = "", data_dir: str | None = None, trained_on: str | None = None,
        online: bool = False, model: str | None = None, stale: str | None = None) -> dict:
    """One table row. dataset: the data set the probes were trained and tested on; trained_on: the
    encoder's training data set when different (transfer); online: the accuracies are the online probes';
    model: the encoder's MODEL_SIZES name (`presets.model_size_name`), which picks the paper figure;
    stale: why the accuracies may not describe the run's checkpoint (`runfolder.stale_evaluation`)."""
    key = paper_key(dataset, data_dir)
    name = DISPLAY.get(dataset, dataset)
    if dataset == "folder" and data_dir:
        name = f"{DISPLAY[key]} ({Path(str(data_dir)).name}, image folder)" if key else f"image folder {Path(str(data_dir)).name}"
    if trained_on and trained_on != dataset:
        name += f", {DISPLAY.get(trained_on, trained_on)} encoder"
    return {"dataset": dataset, "paper_key": key, "name": name, "run": run, "setting": setting,
            "linear": linear, "mlp": mlp, "knn": knn, "online": online, "paper": paper_reference(dataset, data_dir, model)[1],
            "stale": stale}


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A markdown table: one line of `headers`, the alignment line, one line per row of cells.
    align: one letter per column, "l" (left) or "r" (right, for numbers); None: all left."""
    align = align or "l" * len(headers)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r}: give one of 'l' or 'r' for each of the {len(headers)} columns")
    rule = "|" + "".join("---:|" if side == "r" else "---|" for side in align)
    return "\n".join(["| " + " | ".join(map(str, headers)) + " |", rule]
                     + ["| " + " | ".join(map(str, cells)) + " |" for cells in rows])


def describe(config: dict, steps: int | None = None) -> str:
    """'32 px, ndf 256, n_rkhs 2048, depth 10; 31,000 steps of 480' from a config dict (config.json)."""
    text = (f"{config.get('image_size', '?')} px, ndf {config.get('ndf', '?')}, n_rkhs {config.get('n_rkhs', '?')}, "
            f"depth {config.get('n_depth', '?')}")
    if steps:
        text += f"; {steps:,} steps of {config.get('batch_size', '?')}"
    return text


def run_row(run_dir: str | Path, name: str | None = None) -> dict:
    """The row of one run directory: frozen-feature probes (eval.json, its 'AMDIM (trained)' entry)
    when present, else the online probes' last evaluation (metrics.jsonl)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / RunFolder.EVAL_INFO) or {}
    config = read_json(run_dir / RunFolder.CONFIG) or info.get("config") or {}
    records = read_jsonl(run_dir / RunFolder.METRICS)
    steps = max((r.get("step", 0) for r in records), default=None)
    evaluated = info.get("dataset") or config.get("dataset")
    if evaluated is None:
        raise FileNotFoundError(f"{run_dir} holds neither config.json nor eval_info.json: not a run directory")
    trained_on = info.get("trained_on") or config.get("dataset")
    data_dir = config.get("data_dir") if evaluated == config.get("dataset") else None
    common = dict(run=name or run_dir.name, setting=describe(config, steps), data_dir=data_dir, trained_on=trained_on,
                  model=model_size_name(config))
    results = read_json(run_dir / RunFolder.EVAL) or {}
    ours = results.get("AMDIM (trained)") or (next(iter(results.values())) if results else None)
    if ours:
        return row(evaluated, ours.get("linear"), ours.get("mlp"), ours.get("knn"), stale=stale_evaluation(info),
                   **common)
    evals = [r for r in records if r.get("kind") == "eval"]
    if evals:
        last = evals[-1]
        return row(evaluated, last.get("test_linear_acc"), last.get("test_mlp_acc"), None, online=True, **common)
    return row(evaluated, **common)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _cells(r: dict) -> list[str]:
    paper = r["paper"]
    run = r["run"] + (" (online probes)" if r.get("online") else "") + (f" ({r['stale']})" if r.get("stale") else "")
    return [r["name"], run, r["setting"] or "–", _cell(r["linear"]), _cell(r["mlp"]), _cell(r["knn"]),
            "–" if paper is None else f"{paper:.1f}"]


def results_table(rows: list[dict], include_missing: bool = True, notes: bool = True) -> str:
    """Markdown: one line per row, the paper's linear figure beside ours; with include_missing, a line
    for each paper data set without a run (our cells empty), so the table always shows the targets."""
    order = list(PAPER_LINEAR)
    rows = sorted(rows, key=lambda r: order.index(r["paper_key"]) if r["paper_key"] in order else len(order))
    if include_missing:
        present = {r["paper_key"] for r in rows}
        rows = rows + [row(key, run="not run yet", model=PAPER_MODEL[key]) for key in order if key not in present]
        rows = sorted(rows, key=lambda r: order.index(r["paper_key"]) if r["paper_key"] in order else len(order))
    table = markdown_table(["data set", "run", "encoder, training", "linear (%)", "MLP (%)", "kNN (%)",
                            "paper, linear (%)"], map(_cells, rows), "lllrrrr")
    return table + (f"\n\n{PROTOCOL}" if notes else "")


def table_from_runs(run_dirs, include_missing: bool = True, notes: bool = True) -> str:
    """The results table of run directories (those that do not exist are left out)."""
    rows = [run_row(d) for d in run_dirs if Path(d).is_dir()]
    return results_table(rows, include_missing, notes)
