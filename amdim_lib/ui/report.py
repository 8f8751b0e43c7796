"""Plots and tables of a run: training curves, probe results, label efficiency, 2-D embeddings, and the
comparison with the paper's numbers.

Every plotting function returns a matplotlib Figure (the caller shows and saves it); every table is a
markdown string. Nothing here trains a network; the label-efficiency curve and the 2-D embedding are
computed here because they exist only to be drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..run.checkpoints import read_json
from ..run.runfolder import read_metrics
from ..analysis.results import markdown_table, paper_reference

LOSS_TERMS = ("1t5", "1t7", "5t5")
LOCATIONS = {"1t5": 25, "1t7": 49, "5t5": 25}  # target locations per image of each pair (32-128 px encoders)


# ----------------------------------------------------------------------------- training curves

def split_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a metrics.jsonl log (`checkpoints.read_metrics`)."""
    return [r for r in records if r.get("kind") == "train"], [r for r in records if r.get("kind") == "eval"]


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what is there), same length as `values`."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) == 0:
        return values
    kernel = np.ones(window)
    sums = np.convolve(values, kernel)[:len(values)]
    counts = np.convolve(np.ones(len(values)), kernel)[:len(values)]
    return sums / counts


def chance_losses(batch_size: int) -> dict[str, float]:
    """Each pair's NCE loss when all scores are equal: log(1 + (B - 1) L), one positive against the
    (B - 1) L locations of the other images. A fresh encoder starts near it; learning goes below."""
    return {task: math.log(1 + (batch_size - 1) * n) for task, n in LOCATIONS.items()}


def accuracy_limits(values, n_classes: int | None = None, margin: float = 0.05) -> tuple[float, float]:
    """A y-range fitted to accuracies (and the chance level 1/n_classes), so that differences of a few
    points stay visible when every value lies between 0.1 and 0.35."""
    finite = [float(v) for v in values if np.isfinite(v)] + ([1 / n_classes] if n_classes else [])
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    return max(0.0, low - margin), min(1.0, high + 2 * margin)


def plot_losses(records: list[dict], batch_size: int | None = None, milestone_steps=(),
                title: str = "AMDIM training losses"):
    """Two panels against the update step: the NCE loss of each pair (1->5, 1->7, 5->5) with its
    chance level, and the total loss with the weighted score regulariser. Faint: logged values;
    bold: moving average; dotted verticals: the learning-rate milestones."""
    train, _ = split_records(records)
    if not train:
        raise ValueError("no training records to plot (is metrics.jsonl empty?)")
    steps = [r["step"] for r in train]
    window = max(1, len(train) // 15)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = dict(zip(LOSS_TERMS, ("tab:blue", "tab:orange", "tab:green")))
    names = {"1t5": "global → 5×5 (1t5)", "1t7": "global → 7×7 (1t7)", "5t5": "5×5 → 5×5 (5t5)"}
    ax = axes[0]
    for task in LOSS_TERMS:
        if task in train[0]:
            values = [r[task] for r in train]
            ax.plot(steps, values, color=colours[task], alpha=0.25, lw=1)
            ax.plot(steps, smooth(values, window), color=colours[task], lw=2, label=names[task])
    if batch_size:
        levels: dict[float, list[str]] = {}
        for task, value in chance_losses(batch_size).items():
            if task in train[0]:
                levels.setdefault(round(value, 6), []).append(task)
        for value, tasks in levels.items():
            ax.axhline(value, color="grey", ls=":", lw=1.2)
            ax.text(steps[-1], value, "chance " + ", ".join(tasks), ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax.set(xlabel="update step", ylabel="NCE loss (nats)", title="NCE loss per pair of scales")
    ax = axes[1]
    ax.plot(steps, [r["loss"] for r in train], color="black", alpha=0.25, lw=1)
    ax.plot(steps, smooth([r["loss"] for r in train], window), color="black", lw=2)
    ax.set(xlabel="update step", title="Total loss (black) and score regulariser (red)")
    ax.set_ylabel("total loss (nats)")
    if "reg" in train[0]:
        twin = ax.twinx()
        twin.plot(steps, [r["reg"] for r in train], color="tab:red", alpha=0.25, lw=1)
        twin.plot(steps, smooth([r["reg"] for r in train], window), color="tab:red", lw=2)
        twin.set_ylabel("0.05 × mean(u²)", color="tab:red")
        twin.tick_params(axis="y", colors="tab:red")
    for ax in axes:
        for m in milestone_steps:
            if m <= steps[-1]:
                ax.axvline(m, color="tab:purple", ls=":", lw=1.2)
    if any(m <= steps[-1] for m in milestone_steps):
        axes[0].plot([], [], color="tab:purple", ls=":", label="learning rate × γ (milestone)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_lr_schedule(factors, base_lr: float, steps_per_epoch: int, title: str = "Learning-rate schedule"):
    """The planned learning rate per update (base_lr x factor), epochs marked on a second axis."""
    steps = np.arange(len(factors))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(steps, base_lr * np.asarray(factors), color="tab:purple", lw=2)
    ax.set(xlabel="update step", ylabel="learning rate", title=title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for epoch in range(1, len(factors) // max(steps_per_epoch, 1) + 1):
        ax.axvline(epoch * steps_per_epoch, color="grey", lw=0.6, ls=":")
    ax.text(0.99, 0.04, "dotted lines: epoch boundaries", transform=ax.transAxes, ha="right", fontsize=9, color="grey")
    fig.tight_layout()
    return fig


def plot_online_probes(records: list[dict], n_classes: int | None = None, title: str = "Online probes on r1"):
    """Accuracy of the online linear and MLP probes: on each training batch (smoothed) and on the
    held-out test split after each evaluated epoch, with the chance level."""
    train, evals = split_records(records)
    if not train:
        raise ValueError("no training records to plot (is metrics.jsonl empty?)")
    window = max(1, len(train) // 15)
    steps = [r["step"] for r in train]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, colour in (("linear", "tab:blue"), ("mlp", "tab:orange")):
        label = "MLP" if name == "mlp" else name
        key = f"probe_{name}_acc"
        if key in train[0]:
            ax.plot(steps, smooth([r[key] for r in train], window), color=colour, lw=1.5, alpha=0.8,
                    label=f"{label}, training batches (smoothed)")
        if evals and f"test_{name}_acc" in evals[0]:
            ax.plot([e["step"] for e in evals], [e[f"test_{name}_acc"] for e in evals], "o-", color=colour, lw=2.5,
                    ms=7, label=f"{label}, test split (per epoch)")
    if n_classes:
        ax.axhline(1 / n_classes, color="grey", ls="--", lw=1, label=f"chance (1/{n_classes})")
    values = [r[k] for r in train for k in ("probe_linear_acc", "probe_mlp_acc") if k in r]
    values += [e[k] for e in evals for k in ("test_linear_acc", "test_mlp_acc") if k in e]
    ax.set(xlabel="update step", ylabel="accuracy", title=title, ylim=accuracy_limits(values, n_classes))
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def probe_gain_by_half(records: list[dict], total_steps: int, n_classes: int) -> dict[str, float]:
    """Test accuracy the online linear probe gained in each half of the updates: {"first half": its accuracy at
    the last evaluation by update total_steps / 2 minus chance, "second half": the final accuracy minus that}."""
    evals = [e for e in split_records(records)[1] if "test_linear_acc" in e]
    if not evals:
        raise ValueError("no test evaluation of the online probe in these records: train at least one epoch")
    chance = 1 / n_classes
    halfway = [e["test_linear_acc"] for e in evals if e["step"] <= total_steps / 2]
    at_half = halfway[-1] if halfway else chance
    return {"first half": at_half - chance, "second half": evals[-1]["test_linear_acc"] - at_half}


def training_metrics(records: list[dict], summary: dict, config, preset: str, device: str,
                     trained_now: bool, previous: dict | None = None) -> dict:
    """The headline numbers of a training run (04's metrics.json) from its log and `train`'s summary.

    When nothing was trained now (a finished checkpoint was loaded), the wall time comes from the
    previous metrics.json of the same run when its step count matches, else it is estimated from the
    log's throughput (images/s at the last logged step), and `seconds_source` says which.
    """
    train, evals = split_records(records)
    last = train[-1] if train else {}
    images_per_s = last.get("images_per_s")
    if trained_now:
        seconds, source = summary["seconds"], "measured"
    elif previous and previous.get("steps") == summary["steps"] and previous.get("seconds") is not None:
        seconds, source = previous["seconds"], previous.get("seconds_source", "measured")
        images_per_s = previous.get("images_per_s", images_per_s)
    elif images_per_s:
        seconds, source = round(2 * config.batch_size * last["step"] / images_per_s, 1), "estimated from the log"
    else:
        seconds, source = None, "unknown"
    if trained_now:
        images_per_s = summary["images_per_s"]
    final = {k: last[k] for k in (*LOSS_TERMS, "reg", "loss") if k in last}
    test = {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("test_")}
    return {"dataset": config.dataset, "preset": preset, "device": device, "steps": summary["steps"],
            "total_steps": summary["total_steps"], "finished": summary["finished"], "trained_now": trained_now,
            "seconds": seconds, "seconds_source": source, "images_per_s": images_per_s,
            "batch_size": config.batch_size, "final_losses": final, "online_probe_test": test,
            "online_probe_test_per_epoch": [{k: e[k] for k in e if k != "kind"} for e in evals]}


# ----------------------------------------------------------------------------- probe results

def plot_probe_results(results: dict[str, dict[str, float]], n_classes: int | None = None,
                       title: str = "Frozen-feature evaluation on the test split"):
    """Grouped bars: one group per probe (linear, MLP, kNN), one bar per feature set, values on top."""
    names = list(results)
    probes = [p for p in ("linear", "mlp", "knn") if any(p in results[n] for n in names)]
    labels = {"linear": "linear probe", "mlp": "MLP probe", "knn": "kNN (k=200)"}
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, 2.4 * len(probes) + 1.5), 4.4))
    colours = plt.get_cmap("tab10").colors
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(probes))]
        values = [results[name].get(p, np.nan) for p in probes]
        bars = ax.bar(xs, values, width * 0.92, label=name, color=colours[i % 10])
        for bar, value in zip(bars, values):
            if np.isfinite(value):
                ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{100 * value:.0f}", ha="center",
                        va="bottom", fontsize=8)
    if n_classes:
        ax.axhline(1 / n_classes, color="grey", ls="--", lw=1, label=f"chance (1/{n_classes})")
    ax.set_xticks(range(len(probes)), [labels[p] for p in probes])
    values = [v for name in names for v in results[name].values()]
    top = max([v for v in values if np.isfinite(v)] + [1 / n_classes if n_classes else 0.0])
    ax.set(ylabel="test accuracy", ylim=(0.0, min(1.0, top + 0.08)), title=title)  # bars start at zero
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- label efficiency (curves from evaluate.label_efficiency)

def plot_label_efficiency(curves: dict[str, list[dict]], n_classes: int | None = None,
                          title: str = "Label efficiency of frozen features (linear probe)"):
    """Test accuracy against labelled examples per class (log axis), mean ± std over the draws."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    markers = "osD^v"
    for i, (name, points) in enumerate(curves.items()):
        xs = [p["per_class"] for p in points]
        ax.errorbar(xs, [p["mean"] for p in points], yerr=[p["std"] for p in points], marker=markers[i % 5],
                    capsize=3, lw=2, ms=6, label=name)
    if n_classes:
        ax.axhline(1 / n_classes, color="grey", ls="--", lw=1, label=f"chance (1/{n_classes})")
    ax.set_xscale("log")
    ticks = sorted({p["per_class"] for points in curves.values() for p in points})
    all_tick = {p["per_class"] for points in curves.values() for p in points if p["all"]}
    ax.set_xticks(ticks, [f"{t}\n(all)" if t in all_tick else str(t) for t in ticks])
    ax.minorticks_off()
    values = [p["mean"] + sign * p["std"] for points in curves.values() for p in points for sign in (-1, 1)]
    ax.set(xlabel="labelled examples per class", ylabel="test accuracy", ylim=accuracy_limits(values, n_classes),
           title=title)
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 2-D embeddings (from evaluate.embed_2d)


def plot_embeddings(embeddings: dict[str, tuple], class_names: list[str], title: str = "t-SNE of test features"):
    """Side-by-side scatter plots of 2-D embeddings {name: (xy, labels)}, coloured by class, one legend."""
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5.2 * len(embeddings) + 1.8, 5.2), squeeze=False)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20").colors
    for ax, (name, (xy, labels)) in zip(axes[0], embeddings.items()):
        for c, class_name in enumerate(class_names):
            mask = labels == c
            ax.scatter(xy[mask, 0], xy[mask, 1], s=9, alpha=0.8, color=colours[c % len(colours)], label=class_name)
        ax.set(title=name, xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, title="class")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- comparison with the paper

def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def comparison_table(dataset: str, results: dict[str, dict[str, float]], compute: dict[str, str],
                     preset: str, data_dir: str | None = None, model: str | None = None) -> str:
    """Markdown: the paper's linear-evaluation figure for the data set beside this run's feature sets.

    results: {feature set: {"linear": acc, "mlp": acc, "knn": acc}} as fractions.
    compute: {feature set: a short description of what it cost (device, steps, wall time)}.
    """
    name, paper = paper_reference(dataset, data_dir, model)
    probes = [p for p in ("linear", "mlp", "knn") if any(p in r for r in results.values())]
    header = {"linear": "linear (%)", "mlp": "MLP (%)", "knn": "kNN (%)"}
    if paper is not None:
        rows = [["AMDIM (paper, large model)", name, "paper", "as reported",
                 *(f"**{paper:.1f}**" if p == "linear" else "–" for p in probes)]]
    else:
        rows = [["AMDIM (paper)", name, "–", f"no paper figure for {name} with this encoder; compare with the baselines below",
                 *("n/a" for _ in probes)]]
    rows += [[model, name, preset, compute.get(model, "–"),
              *(f"{100 * row[p]:.1f}" if p in row and row[p] is not None else "–" for p in probes)]
             for model, row in results.items()]
    return markdown_table(["model", "data set", "preset", "compute", *(header[p] for p in probes)], rows,
                          "llll" + "r" * len(probes))


# ----------------------------------------------------------------------------- what a run cost

def run_compute(train_dir: str | Path, config, trained_summary: dict | None = None, device: str | None = None) -> dict:
    """Device, preset, updates and wall time of the self-supervised run in `train_dir`.

    Sources, best first: `trained_summary` (the run was trained just now by the caller), the run's
    metrics.json (written by notebook 04), else its metrics.jsonl (updates; wall time estimated from
    the logged throughput). Returns device, preset, steps, batch_size, seconds, seconds_source.
    """
    out = {"device": device or "?", "preset": None, "steps": None, "batch_size": config.batch_size,
           "seconds": None, "seconds_source": "unknown"}
    if trained_summary is not None:
        return {**out, "steps": trained_summary["steps"], "seconds": trained_summary["seconds"],
                "seconds_source": "measured"}
    saved = read_json(Path(train_dir) / "metrics.json") or {}
    if saved.get("steps") is not None:
        return {**out, **{k: saved[k] for k in ("device", "preset", "steps", "seconds", "seconds_source") if k in saved}}
    train, _ = split_records(read_metrics(train_dir))
    if train:
        last = train[-1]
        out["steps"] = last["step"]
        if last.get("images_per_s"):
            out["seconds"] = round(2 * config.batch_size * last["step"] / last["images_per_s"], 1)
            out["seconds_source"] = "estimated from the log"
    return out


def compute_text(compute: dict, planned: int | None = None) -> str:
    """'cpu, 558 updates of batch 64, 7.5 min' from `run_compute`'s result; with `planned` larger than
    the updates done (an unfinished run), '40 of 558 updates'."""
    steps = compute.get("steps")
    done = "?" if steps is None else f"{steps:,}"
    if planned and steps is not None and steps < planned:
        done += f" of {planned:,}"
    text = f"{compute.get('device', '?')}, {done} updates of batch {compute.get('batch_size', '?')}, " \
           f"{format_seconds(compute.get('seconds'))}"
    return text + (" (estimated)" if compute.get("seconds_source") == "estimated from the log" else "")
