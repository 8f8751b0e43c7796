"""Ablation sweeps: train a list of configuration variants over several seeds, probe each frozen
encoder, and collect one table with the mean and spread over seeds.

A *variant* is a dict of `Config` overrides applied to a base configuration (the preset's), so an
ablation is a switch in the configuration, never a fork of the code:

    from amdim_lib.run.presets import get_config
    from amdim_lib.analysis.sweep import run_sweep, sweep_table, significant_differences
    results = run_sweep(get_config("shapes", "demo"), ["full", "single_scale", "dim_baseline"],
                        seeds=[0, 1], out_dir="runs/ablations", steps=80)
    table = sweep_table(results)

`VARIANTS` lists the named ones and the question each answers: `multiscale` (what predicting across
scales adds), `views` (what augmentation adds), `scores` (what the NCE score penalty and clipping do),
`size`, or a `baseline`. Any other dict of
`Config` overrides works too, e.g. `{"wide": {"ndf": 64, "n_rkhs": 512}}`. An override value may also
be a function of the base configuration (`Scaled("ndf", 2)`), so that "twice as wide" means the same
at every preset.

Layout and resumption: run (variant, seed) trains into `out_dir/<variant>/seed<k>/` with
`amdim_lib.run.train.train_until` (which resumes), so an interrupted run continues from its checkpoint; after
the probe, `result.json` is written there atomically, and a run with a `result.json` is not touched
again. Running the same sweep twice therefore trains each run once.

Budget: `steps` updates per run (None: the configuration's own schedule, epochs x steps per epoch).
Every trained variant, the supervised baseline included, is budgeted by `build.budget_config`: enough
epochs for `steps`, exactly `steps` updates, a constant learning rate after a warm-up of a tenth of
the budget (at most the configuration's warm-up) and no step decay, so every variant sees the same
schedule.

Probe: `evaluate.probe_encoder`: r1 features with the test transform, a linear probe (logistic
regression, C chosen on a held-out 10%) and a cosine kNN, on at most `probe_train` / `probe_test`
images of the run's labelled splits.

Baselines beside the variants: `supervised` (the same encoder trained with labels for the same number
of updates, `amdim_lib.run.supervised`), `random_init` (the same encoder untrained: what the architecture
gives for free) and `dim_baseline` (local DIM: global-to-local prediction on one unaugmented image,
without AMDIM's score clipping and penalty).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from ..run.build import budget_config, build_encoder, encoder_from_checkpoint, select_device
from ..run.checkpoints import read_json, save_json
from ..run.runfolder import RunFolder, latest_run_checkpoint, reuse_finished_run
from .evaluate import probe_encoder
from ..run.presets import Config, workbook_sizes
from .results import markdown_table
from ..run.supervised import train_supervised
from ..run.train import train_until

REFERENCE = "full"


class Scaled:
    """An override relative to the base configuration: `Scaled("ndf", 2)` -> base.ndf * 2 (at least 1)."""

    def __init__(self, name: str, factor: float):
        self.name, self.factor = name, factor

    def __call__(self, base: Config) -> int:
        return max(1, round(getattr(base, self.name) * self.factor))

    def __repr__(self) -> str:
        return f"{self.name} x{self.factor:g}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Scaled) and (self.name, self.factor) == (other.name, other.factor)


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: Config overrides, the question it answers, what the paper reports.

    method: 'amdim' (self-supervised training), 'supervised' (the same encoder trained on labels for
    the same number of updates) or 'random' (the untrained encoder: no updates).
    """

    overrides: Mapping = field(default_factory=dict)
    question: str = "custom"
    description: str = ""
    paper: str = "–"          # the direction the AMDIM paper reports for this change (no numbers)
    method: str = "amdim"

    def __post_init__(self):
        if self.method not in ("amdim", "supervised", "random"):
            raise ValueError(f"variant method {self.method!r}; choose amdim, supervised or random")


VARIANTS: dict[str, Variant] = {
    "full": Variant({}, "reference", "AMDIM as configured: 1t5 + 1t7 + 5t5, full augmentation, score penalty, tclip",
                    "the reference"),
    # multiscale: which prediction tasks
    "single_scale": Variant({"tasks": ("1t7",)}, "multiscale", "single scale: global -> 7x7 (1t7) only",
                            "lower: multiscale prediction beats a single global-to-local task"),
    "no_5t5": Variant({"tasks": ("1t5", "1t7")}, "multiscale", "no local -> local task (1t5 + 1t7)",
                      "lower (multiscale prediction helps)"),
    "only_1t5": Variant({"tasks": ("1t5",)}, "multiscale", "single scale: global -> 5x5 (1t5) only",
                        "lower (multiscale prediction helps)"),
    # views: augmentation
    "augment_none": Variant({"augment": "none"}, "views", "no augmentation: two identical views (no flip, crop, jitter)",
                            "much lower: augmentation is what makes the task useful"),
    "augment_flip": Variant({"augment": "flip"}, "views", "shared horizontal flip only",
                            "much lower (no crop, no colour jitter)"),
    "augment_crop": Variant({"augment": "crop"}, "views", "flip + crop/translate, no colour jitter or grayscale",
                            "lower: colour jitter matters"),
    # scores: the NCE regularisation
    "no_reg": Variant({"reg_weight": 0.0}, "scores", "no score penalty (reg_weight 0)",
                      "less stable training (a stabiliser, not an accuracy gain)"),
    "tclip_5": Variant({"tclip": 5.0}, "scores", "tanh clip at 5", "– (the paper uses 20)"),
    "tclip_10": Variant({"tclip": 10.0}, "scores", "tanh clip at 10", "– (the paper uses 20)"),
    "tclip_none": Variant({"tclip": None}, "scores", "no tanh clipping of the scores",
                          "less stable training (a stabiliser, not an accuracy gain)"),
    # encoder size
    "narrow": Variant({"ndf": Scaled("ndf", 0.5), "n_rkhs": Scaled("n_rkhs", 0.5)}, "size",
                      "half the width (ndf, n_rkhs)", "lower: larger encoders do better"),
    "wide": Variant({"ndf": Scaled("ndf", 2), "n_rkhs": Scaled("n_rkhs", 2)}, "size",
                    "twice the width (ndf, n_rkhs)", "higher: larger encoders do better"),
    "shallow": Variant({"n_depth": 1}, "size", "one layer per residual block (n_depth 1)",
                       "lower: larger encoders do better"),
    "deep": Variant({"n_depth": Scaled("n_depth", 2)}, "size", "twice the layers per block (n_depth x2)",
                    "higher: larger encoders do better"),
    # baselines
    # Local DIM as Hjelm et al. (ICLR 2019) define it: one view (no augmentation between the two sides),
    # global -> local prediction, none of AMDIM's multiscale tasks, score clipping or penalty; the same encoder.
    "dim_baseline": Variant({"tasks": ("1t7",), "augment": "none", "tclip": None, "reg_weight": 0.0}, "baseline",
                            "local DIM: global -> 7x7 (1t7) on one unaugmented image, no score clipping or penalty "
                            "(the method AMDIM extends)",
                            "much lower: AMDIM's additions over DIM are the paper's point"),
    "supervised": Variant({}, "baseline", "the same encoder trained with labels (cross-entropy), same views and updates",
                          "–", method="supervised"),
    "random_init": Variant({}, "baseline", "the same encoder, untrained (what the architecture gives for free)",
                           "–", method="random"),
    # multiscale: mixture features (amdim_lib.core.mixture): k global features, the 1t7 task through them
    "mixture_k4": Variant({"mixture_k": 4}, "multiscale", "mixture of k = 4 global features in place of the single one (1t7)",
                          "about the same accuracy; the mixture's benefit is segmentation, not the probe"),
}


def sweep_scale(preset: str) -> dict:
    """The sweep's scale at `preset` (amdim_lib.run.presets.WORKBOOK_SIZES["06"]), its variants as names."""
    scale = workbook_sizes("06", preset)
    return dict(scale, variants=tuple(resolve_variants(scale["variants"])))


# ----------------------------------------------------------------------------- configurations

def resolve_variants(variants: Iterable | Mapping | str | None, default: Iterable[str] = ()) -> dict[str, Variant]:
    """{name: Variant} from names of `VARIANTS`, 'all', a {name: Variant or overrides dict} mapping,
    or None (the `default` names)."""
    if variants is None:
        variants = list(default)
    if isinstance(variants, str):
        variants = list(VARIANTS) if variants == "all" else [variants]
    if isinstance(variants, Mapping):
        return {name: v if isinstance(v, Variant) else Variant(dict(v), "custom", overrides_text(v))
                for name, v in variants.items()}
    out = {}
    for name in variants:
        if name == "all":
            out.update(VARIANTS)
        elif name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)} (or 'all'), or pass "
                             "a {name: overrides} dict")
        else:
            out[name] = VARIANTS[name]
    return out


def variant_config(base: Config, variant: Variant | Mapping, seed: int | None = None) -> Config:
    """`base` with the variant's overrides (callables resolved against `base`) and the seed."""
    overrides = variant.overrides if isinstance(variant, Variant) else variant
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown} in a variant; this Config has: {sorted(known)}")
    values = {k: (v(base) if callable(v) else v) for k, v in overrides.items()}
    if seed is not None:
        values["seed"] = seed
    return base.replace(**values)


def overrides_text(overrides: Mapping) -> str:
    """Overrides as short text: "tasks=1t7, augment=none" ("–" for none)."""
    def value(v):
        if isinstance(v, tuple):
            return "+".join(map(str, v)) if v else "()"
        return repr(v) if callable(v) else str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in overrides.items()) or "–"


# ----------------------------------------------------------------------------- one run

def run_one(name: str, variant: Variant, base: Config, seed: int, run_dir: str | Path, steps: int | None,
            probe_train: int | None = None, probe_test: int | None = None, device: str | None = None) -> dict:
    """Train (or resume, or load) one (variant, seed) in `run_dir`, probe it, write `result.json`.

    A `result.json` of the same configuration is returned as it is (status 'loaded'); one of another
    configuration is an error (choose another output folder). A run whose loss or gradient becomes
    non-finite is recorded with status 'diverged' and no accuracies.
    """
    run_dir = Path(run_dir)
    config, budget = budget_config(variant_config(base, variant, seed), steps)
    if variant.method == "random":
        budget = 0
    result_path = run_dir / RunFolder.RESULT
    saved = read_json(result_path)
    same_record = saved is not None and [saved.get("steps"), saved.get("method"), saved.get("probe_limits")] == [
        budget, variant.method, [probe_train, probe_test]]
    if reuse_finished_run(result_path, saved and saved["config"], config, finished=same_record):
        return {**saved, "status_now": "loaded"}
    if saved is not None:
        raise ValueError(f"{result_path} holds a result of another budget, method or probe size; "
                         "choose another output folder (or delete that run's folder to recompute it)")

    run_dir.mkdir(parents=True, exist_ok=True)
    probe_device = select_device(device or config.device)
    record = {"variant": name, "seed": seed, "method": variant.method, "question": variant.question,
              "description": variant.description, "paper": variant.paper,
              "overrides": overrides_text(variant.overrides), "steps": budget, "config": config.to_dict(),
              "probe_limits": [probe_train, probe_test], "status": "done",
              "resumed_from": 0}
    start = time.perf_counter()
    try:
        if variant.method == "amdim":
            existing = latest_run_checkpoint(run_dir)
            record["resumed_from"] = existing["step"] if existing is not None else 0
            del existing
            summary = train_until(config, run_dir, budget)
            encoder, _ = encoder_from_checkpoint(run_dir / RunFolder.CHECKPOINT)
            record["online"] = summary.get("eval") or {}
        elif variant.method == "supervised":
            encoder, summary = train_supervised(config, steps=budget, out_dir=run_dir, progress=False)
            record["supervised_test_acc"] = summary["test_acc"]  # the network with its own head
        else:
            torch.manual_seed(config.seed)
            encoder = build_encoder(config)
    except FloatingPointError as error:  # a non-finite loss or gradient: a result of the ablation, kept
        record.update(status="diverged", error=str(error).split(". ")[0], linear=None, knn=None,
                      train_seconds=round(time.perf_counter() - start, 1), eval_seconds=0.0)
        save_json(result_path, record)
        return {**record, "status_now": "trained"}
    record["train_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    scores = probe_encoder(encoder, config, probe_train, probe_test, device=probe_device)
    record.update(linear=scores["linear"], knn=scores["knn"], probe_train=scores["n_train"],
                  probe_test=scores["n_test"])
    record["eval_seconds"] = round(time.perf_counter() - start, 1)
    save_json(result_path, record)
    return {**record, "status_now": "trained"}


# ----------------------------------------------------------------------------- the sweep

def run_sweep(base: Config, variants=None, seeds: Iterable[int] = (0, 1), out_dir: str | Path = "runs/ablations",
              steps: int | None = None, probe_train: int | None = None, probe_test: int | None = None,
              device: str | None = None, progress: bool | Callable[[str], None] = True,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Every (variant, seed) of the sweep, in order: trained, resumed or loaded, then probed.

    variants: names of `VARIANTS`, 'all', or a {name: Variant or overrides dict} mapping.
    steps: updates per run (None: each configuration's own schedule).
    progress: True prints one line per run; a callable receives that line instead; False is silent.
    on_result: called with each run's record as soon as it is done (e.g. to update a display).
    Returns the records of all runs (each as in its result.json, plus `status_now`: trained | loaded).
    """
    say = print if progress is True else (progress or (lambda line: None))
    chosen = resolve_variants(variants, default=[REFERENCE])
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    for name, variant in chosen.items():  # every configuration is checked before anything trains
        variant_config(base, variant, seeds[0])
    out_dir = Path(out_dir)
    runs = [(name, variant, seed) for name, variant in chosen.items() for seed in seeds]
    records = []
    for number, (name, variant, seed) in enumerate(runs, 1):
        record = run_one(name, variant, base, seed, out_dir / name / f"seed{seed}", steps,
                         probe_train, probe_test, device)
        records.append(record)
        accuracy = ("diverged" if record["status"] == "diverged" else
                    f"linear {100 * record['linear']:.1f} %, kNN {100 * record['knn']:.1f} %")
        how = ("loaded" if record["status_now"] == "loaded" else
               f"{record['steps']} updates" + (f" (resumed at {record['resumed_from']})" if record["resumed_from"] else "")
               + f", {record['train_seconds'] + record['eval_seconds']:.0f} s")
        say(f"[{number}/{len(runs)}] {name}, seed {seed}: {accuracy} ({how})")
        if on_result is not None:
            on_result(record)
    return records


def steps_trained_now(records: list[dict]) -> int:
    """Updates actually trained by this call of the sweep (loaded runs and resumed parts excluded)."""
    return sum(r["steps"] - r.get("resumed_from", 0) for r in records if r.get("status_now") == "trained")


def load_results(out_dir: str | Path) -> list[dict]:
    """The records of every finished run under `out_dir` (its `<variant>/seed<k>/result.json` files)."""
    return [read_json(p) for p in sorted(Path(out_dir).glob("*/seed*/result.json"))]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def sweep_table(records: list[dict], metrics=("linear", "knn")) -> list[dict]:
    """One row per variant (in the order met): mean and sample standard deviation over seeds of each
    metric, the seeds and per-seed values, the probes' test-set size `n_test`, diverged runs counted
    (and left out of the means)."""
    rows: dict[str, dict] = {}
    for r in records:
        row = rows.setdefault(r["variant"], {"variant": r["variant"], "question": r.get("question", ""),
                                             "method": r.get("method", "amdim"), "overrides": r.get("overrides", ""),
                                             "steps": r.get("steps"), "seeds": [], "diverged": 0, "n_test": None,
                                             **{f"{m}_values": [] for m in metrics}})
        row["seeds"].append(r["seed"])
        if r.get("status") == "diverged":
            row["diverged"] += 1
            continue
        for m in metrics:
            row[f"{m}_values"].append(r[m])
        if r.get("probe_test"):
            row["n_test"] = min(row["n_test"] or r["probe_test"], r["probe_test"])
    for row in rows.values():
        first = next(r for r in records if r["variant"] == row["variant"])
        known = VARIANTS.get(row["variant"], Variant(description=row["overrides"]))
        row["description"] = first.get("description") or known.description
        row["paper"] = first.get("paper") or known.paper
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(row[f"{m}_values"])
    return list(rows.values())


SIGNIFICANCE_RULE = ("a difference counts when it exceeds the sum of the two variants' spreads, |mean_a - mean_b| "
                     "> s_a + s_b, where s is the seed-to-seed standard deviation (sample sd), but at least the "
                     "binomial standard error sqrt(p(1-p)/n) of one accuracy p on n test images; roughly, the ±1 sd "
                     "error bars do not overlap. With 2-3 seeds this is a rough screen against reading noise as "
                     "an effect, not a test at a stated confidence level")


# Pairs of variants that isolate one factor where neither is the reference: (variant, against) ->
# (question, what the pair isolates, the paper's direction). Compared whenever both are in a sweep.
CONTRASTS = {
    ("dim_baseline", "single_scale"): ("views", "augmentation with AMDIM's clip and penalty at a single scale: "
                                       "none of them (DIM) against all, both 1t7 only", "much lower without augmentation"),
    ("dim_baseline", "augment_none"): ("multiscale", "multiscale with AMDIM's clip and penalty, both without augmentation: "
                                       "1t7 only, neither (DIM) against all three tasks, both", "lower with a single scale"),
}


def spread_of(row: dict, metric: str = "linear") -> float:
    """A variant's seed-to-seed standard deviation, but at least the binomial standard error
    sqrt(p (1 - p) / n) of one accuracy p measured on n test images (when n is known): two seeds can
    agree more closely by chance than a test set of n images can resolve."""
    mean, std, n = row[f"{metric}_mean"], row[f"{metric}_std"], row.get("n_test")
    floor = math.sqrt(mean * (1 - mean) / n) if n else 0.0
    return max(std, floor)


def compare(table: list[dict], variant: str, against: str, metric: str = "linear") -> dict | None:
    """`variant` against `against`: difference of means, spread (s_a + s_b, `spread_of`) and whether the
    difference exceeds it (`SIGNIFICANCE_RULE`); None when either has no mean (absent, or every run diverged).
    Fewer than 2 seeds on either side never counts."""
    rows = {r["variant"]: r for r in table}
    a, b = rows.get(variant), rows.get(against)
    if a is None or b is None or a[f"{metric}_mean"] is None or b[f"{metric}_mean"] is None:
        return None
    diff = a[f"{metric}_mean"] - b[f"{metric}_mean"]
    spread = spread_of(a, metric) + spread_of(b, metric)
    enough = min(len(a[f"{metric}_values"]), len(b[f"{metric}_values"])) >= 2
    return {"variant": variant, "reference": against, "metric": metric, "difference": diff, "spread": spread,
            "significant": bool(enough and abs(diff) > spread)}


def significant_differences(table: list[dict], reference: str = REFERENCE, metric: str = "linear",
                            contrasts: Mapping = CONTRASTS) -> list[dict]:
    """Each variant against `reference`, then each pair of `contrasts` present in the table: the
    difference of means, the spread (sd_a + sd_b) and whether the difference exceeds it
    (`SIGNIFICANCE_RULE`, see `compare`). Contrasts carry `question`, `isolates` and `paper`."""
    rows = {r["variant"]: r for r in table}
    if reference not in rows:
        raise ValueError(f"the reference variant {reference!r} is not in the table ({', '.join(rows)})")
    out = [c for c in (compare(table, name, reference, metric) for name in rows if name != reference) if c]
    for (variant, against), (question, isolates, paper) in contrasts.items():
        c = compare(table, variant, against, metric)
        if c is not None and reference not in (variant, against):
            out.append({**c, "question": question, "isolates": isolates, "paper": paper})
    return out


def significant_names(comparisons: list[dict], reference: str = REFERENCE) -> list[str]:
    """The comparisons that exceed the spread: a variant's name (against the reference) or 'a vs b'."""
    return [c["variant"] if c["reference"] == reference else f"{c['variant']} vs {c['reference']}"
            for c in comparisons if c["significant"]]


def _pct(mean, std) -> str:
    return "–" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def table_markdown(table: list[dict], comparisons: list[dict] | None = None) -> str:
    """Markdown: one line per variant with linear and kNN accuracy (mean ± sd over seeds, %), the
    difference to the reference (* where it exceeds the seed spread) and the paper's direction."""
    diffs = {c["variant"]: c for c in comparisons or [] if c["reference"] == REFERENCE}

    def cells(r):
        c = diffs.get(r["variant"])
        vs = "reference" if c is None and r["variant"] == REFERENCE else (
            "–" if c is None else f"{100 * c['difference']:+.1f}{' *' if c['significant'] else ''}")
        seeds = f"{len(r['seeds'])}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        return [r["variant"], r["question"], r["description"], r["steps"], seeds,
                _pct(r["linear_mean"], r["linear_std"]), _pct(r["knn_mean"], r["knn_std"]), vs, r["paper"]]
    return markdown_table(["variant", "question", "what changes", "updates", "seeds", "linear (%)", "kNN (%)",
                           "linear vs reference (points)", "paper's direction"], map(cells, table), "lllrrrrrl")


def findings(table: list[dict], comparisons: list[dict], reference: str = REFERENCE) -> list[str]:
    """One plain sentence per comparison: the direction we measured, whether it exceeds the seed
    spread, and the paper's direction beside it; first a caution when the reference is not above the
    untrained encoder (then nothing can be read from the others)."""
    rows = {r["variant"]: r for r in table}
    out = []
    untrained = next((c for c in comparisons if c["reference"] == reference
                      and rows[c["variant"]]["method"] == "random"), None)
    if untrained is not None and not (untrained["significant"] and untrained["difference"] < 0):
        out.append(f"**Caution:** {reference} is not above the untrained encoder by more than the seed spread: "
                   "this budget has not taught the encoder enough to tell the variants apart, so none of the "
                   "comparisons below can support or contradict the paper.")
    for c in comparisons:
        row = rows[c["variant"]]
        if c["reference"] == reference:
            name, what, paper = c["variant"], row["description"], row["paper"]
        else:
            name, what, paper = f"{c['variant']} vs {c['reference']}", c.get("isolates", ""), c.get("paper", "–")
        direction = "higher" if c["difference"] > 0 else "lower"
        verdict = (f"exceeds the two variants' spread ({100 * c['spread']:.1f} points: seed sd or binomial floor)"
                   if c["significant"] else
                   f"is within the two variants' spread ({100 * c['spread']:.1f} points: seed sd or binomial floor): "
                   "not supported at this scale")
        if row["diverged"]:
            verdict += f"; {row['diverged']} of its {len(row['seeds'])} runs diverged (left out of the mean)"
        paper = "" if paper in ("–", "the reference") else f" Paper: {paper}."
        out.append(f"**{name}** ({what}): {c['variant']} is {abs(100 * c['difference']):.1f} points {direction} "
                   f"than {c['reference']} ({c['metric']} probe); the difference {verdict}.{paper}")
    for name, row in rows.items():  # every run diverged: no mean, hence no comparison above
        if row["linear_mean"] is None and row["diverged"]:
            out.append(f"**{name}** ({row['description']}): every run diverged (a non-finite loss or gradient)."
                       + ("" if row["paper"] in ("–", "the reference") else f" Paper: {row['paper']}."))
    return out


# ----------------------------------------------------------------------------- the figure

GROUP_COLOURS = {"reference": "tab:blue", "multiscale": "tab:orange", "views": "tab:green", "scores": "tab:olive",
                 "size": "tab:purple", "baseline": "tab:grey", "custom": "tab:brown"}
# The figure's legend names each group by what it asks, not by its label in VARIANTS.
GROUP_NAMES = {"reference": "full AMDIM", "multiscale": "multiscale prediction", "views": "augmentation",
               "scores": "NCE score penalty and clipping", "size": "encoder size", "baseline": "baselines", "custom": "custom"}


def plot_sweep(table: list[dict], metrics=("linear", "knn"), chance: float | None = None, title: str = "Ablations"):
    """Bars of the mean test accuracy per variant with ±1 sd error bars over seeds and each seed as a
    dot, one panel per metric, coloured by research question; a dashed line at chance."""
    import matplotlib.pyplot as plt  # lazy: pyplot starts a plotting backend, which a sweep without figures does not need
    from matplotlib.patches import Patch  # lazy: as pyplot

    names = {"linear": "linear probe", "knn": "kNN (k=200)", "mlp": "MLP probe"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.5, 1.0 * len(table) + 2.5) * len(metrics) / 1.4, 4.8),
                             squeeze=False)
    x = np.arange(len(table))
    for ax, metric in zip(axes[0], metrics):
        means = [100 * (r[f"{metric}_mean"] or 0) for r in table]
        stds = [100 * (r[f"{metric}_std"] or 0) for r in table]
        colours = [GROUP_COLOURS.get(r["question"], "tab:brown") for r in table]
        ax.bar(x, means, yerr=stds, capsize=4, color=colours, alpha=0.8, edgecolor="black", lw=0.6)
        for i, r in enumerate(table):
            values = [100 * v for v in r[f"{metric}_values"]]
            ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=14,
                       color="black", zorder=3)
            if r["diverged"]:
                ax.text(i, 0.02, f"{r['diverged']} diverged", rotation=90, ha="center", va="bottom", fontsize=8,
                        transform=ax.get_xaxis_transform())
        if chance is not None:
            ax.axhline(100 * chance, color="black", ls="--", lw=1)
            ax.annotate("chance", xy=(1.0, 100 * chance), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=8)
        ax.set_xticks(x, [r["variant"] for r in table], rotation=35, ha="right")
        ax.set(ylabel="test accuracy (%)", title=f"{names.get(metric, metric)}: mean ± 1 sd over seeds")
        shown = [v for r in table for v in 100 * np.array(r[f"{metric}_values"])] + [m + s for m, s in zip(means, stds)]
        shown += [100 * chance] if chance is not None else []
        if shown:  # bars start at zero: a bar's length is its accuracy, read against the chance line
            ax.set_ylim(0.0, min(100.0, max(shown) + max(1.0, 0.1 * max(shown))))
        ax.grid(axis="y", alpha=0.3)
    groups = list(dict.fromkeys(r["question"] for r in table))
    fig.legend([Patch(color=GROUP_COLOURS.get(g, "tab:brown"), alpha=0.8) for g in groups],
               [GROUP_NAMES.get(g, g) for g in groups],
               loc="lower center", ncol=len(groups), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def sweep_metrics(table: list[dict], comparisons: list[dict], records: list[dict]) -> dict:
    """What a notebook's metrics.json keeps of a sweep: per-variant mean/sd, the comparisons with the
    reference and which of them exceed the spread, and the total number of updates trained."""
    return {
        "variants": {r["variant"]: {k: r[k] for k in ("question", "method", "steps", "seeds", "diverged", "n_test",
                                                      "linear_mean", "linear_std", "knn_mean", "knn_std",
                                                      "linear_values", "knn_values")} for r in table},
        "comparisons": comparisons,
        "significant": significant_names(comparisons),
        "rule": SIGNIFICANCE_RULE,
        "total_steps": sum(r["steps"] for r in records),
        "steps_trained_now": steps_trained_now(records),
        "trained_now": sum(r.get("status_now") == "trained" for r in records),
        "runs": len(records),
    }
