"""Prose built from a run's numbers: each function returns the Markdown a notebook shows under a figure,
so that the cell a reader sees is one call and the sentence is tested like any other code."""

from __future__ import annotations

import math

import numpy as np

from ..analysis.mi_benchmark import per_level
from ..analysis.results import markdown_table
from .report import chance_losses, compute_text, format_seconds, split_records


def describe_schedule(config, milestone_steps: list[int]) -> str:
    """The optimiser and its learning-rate schedule, in the notation of notebook 00."""
    decay = (f"$\\gamma$ = {config.gamma:g} at epochs {list(config.milestones)} (updates {milestone_steps})."
             if config.milestones else "no milestone.")
    return (f"Adam with learning rate $\\eta_0$ = {config.lr:g}, betas {config.betas}, weight decay "
            f"{config.weight_decay:g}; warm-up $T_w$ = {config.warmup_steps} updates; " + decay)


def describe_training(summary: dict, step_before: int, output_dir, device) -> str:
    """Whether this execution loaded, resumed or trained the run, and how fast."""
    if summary["steps"] <= step_before:
        return (f"**Loaded** the finished run in `{output_dir}` ({summary['steps']} updates); nothing was trained "
                "now. Set `resume = False` to delete it and train again.")
    if step_before:
        return (f"**Resumed** the run in `{output_dir}` at update {step_before} and trained to update "
                f"{summary['steps']} in {summary['seconds']:.0f} s ({summary['images_per_s']:.0f} images/s).")
    return (f"**Trained** from scratch: {summary['steps']} updates in {summary['seconds']:.0f} s "
            f"({summary['images_per_s']:.0f} images/s, both views counted) on {device}.")


def describe_losses(records: list[dict], batch_size: int) -> str:
    """Each NCE term over the last quarter of the log against its chance level, where 5t5 started, and
    whether the weighted regulariser is still rising."""
    train_log, _ = split_records(records)
    chance = chance_losses(batch_size)
    first = train_log[0]
    tail = train_log[-max(1, len(train_log) // 4):]
    end = {k: sum(r[k] for r in tail) / len(tail) for k in (*chance, "reg")}
    below = [k for k in chance if end[k] < chance[k]]
    half = train_log[len(train_log) // 2: len(train_log) * 3 // 4] or tail
    still_rising = end["reg"] > sum(r["reg"] for r in half) / len(half)
    return ("In this run, over the last quarter of the log: "
            + ", ".join(f"{k} {end[k]:.2f} (chance {chance[k]:.2f})" for k in chance) + ". "
            + (f"Below chance: {', '.join(below)}. " if below else "No term is below chance yet. ")
            + f"At the first logged update 5t5 was {first['5t5']:.2f}, "
            f"{'above' if first['5t5'] > chance['5t5'] else 'not above'} its line. "
            f"The weighted regulariser went from {first['reg']:.3f} to {end['reg']:.3f}"
            + (", still rising at the end." if still_rising else ", levelling off by the end."))


def describe_staircase(stats: list[dict], levels: list[float], log_k: float) -> str:
    """Where the trained critics' estimates ended on the MI staircase, and how NWJ's noise moved, from
    `mi_benchmark.phase_statistics` rows; the NWJ sentence follows what the run shows."""
    infonce, nwj, mine = (per_level(stats, label, "mean") for label in ("InfoNCE", "NWJ", "MINE"))
    nwj_std, infonce_std = per_level(stats, "NWJ", "std"), per_level(stats, "InfoNCE", "std")
    return (f"At MI {levels[-1]:g} InfoNCE reports {infonce[-1]:.2f}, NWJ {nwj[-1]:.2f} and MINE {mine[-1]:.2f} "
            f"nats (log K = {log_k:.2f}). NWJ's standard deviation goes from {nwj_std[0]:.2f} to {nwj_std[-1]:.2f} "
            f"nats between MI {levels[0]:g} and {levels[-1]:g}, InfoNCE's from {infonce_std[0]:.2f} to "
            f"{infonce_std[-1]:.2f}. "
            + ("NWJ ends above InfoNCE: its missing cap shows." if nwj[-1] > infonce[-1] else
               "NWJ still ends below InfoNCE: without a cap it could go higher. A likely reason, not tested here: at "
               "this preset its critic has not learned enough from a noisy training signal."))


def describe_ablation_outcome(comparisons: list[dict], steps: int | None, n_seeds: int, n_test: int,
                              reference: str = "full") -> str:
    """How many of a sweep's comparisons (`sweep.significant_differences`) exceed their spread, which
    spread that is, and whether training lifted the reference above the untrained encoder at all."""
    named = [(c["variant"] if c["reference"] == reference else f"{c['variant']} vs {c['reference']}", c)
             for c in comparisons]
    exceed = [name for name, c in named if c["significant"]]
    within = [name for name, c in named if not c["significant"]]
    runs = f"{steps} updates per run" if steps is not None else "the full schedule"
    # Two different spreads: how much seeds disagree (sd over seeds), and how finely n test images can
    # measure one accuracy at all (the binomial floor); each variant's spread is the larger of the two.
    floor = 100 * (0.25 / n_test) ** 0.5
    text = (f"With {runs} and {n_seeds} seeds, **{len(exceed)} of {len(named)} comparisons exceed their spread**"
            + (f" ({', '.join(exceed)})" if exceed else "") + (f"; within it: {', '.join(within)}." if within else ".")
            + f" (A variant's spread is its seed-to-seed sd, or the binomial floor of {n_test:,} test images where "
            f"larger: at most {floor:.1f} points, at 50 % accuracy.)")
    untrained = next((c for c in comparisons if c["variant"] == "random_init" and c["reference"] == reference), None)
    if untrained is None:
        return text
    learned = untrained["significant"] and untrained["difference"] < 0
    gain = -100 * untrained["difference"]
    return text + (f" Full AMDIM scores {abs(gain):.1f} points {'above' if gain >= 0 else 'below'} the untrained "
                   f"encoder (spread {100 * untrained['spread']:.1f}): "
                   + ("training taught the encoder something measurable." + (" A variant comparison within the spread "
                      "needs more updates or seeds to resolve." if within else "") if learned else
                      "too few updates to teach the encoder more than its random initialisation gives, so no "
                      "comparison between variants can be read from this run; more `steps` is the remedy."))


def describe_segmentation(mixture: float, kmeans: float, centre_blob: float, steps: int) -> str:
    """The mixture's mean IoU beside its two baselines, and what beating (or not) each of them shows."""
    beats_blob, beats_kmeans = mixture > centre_blob, mixture > kmeans
    lesson = ("Beating the centre guess shows the components follow objects, learnt without a mask; beating the "
              "per-image clustering of an untrained encoder's colours would be the stronger claim, and this run does not."
              if beats_blob and not beats_kmeans else
              "It beats both, so these features segment better than per-image clustering of raw local colour."
              if beats_blob else
              "It does not beat the centre guess: at this scale the components have not yet settled on objects.")
    return (f"**The result.** After {steps} updates the mixture's best segment reaches a mean IoU of **{mixture:.2f}**, "
            f"{'above' if beats_blob else 'not above'} the centre blob ({centre_blob:.2f}) and "
            f"{'above' if beats_kmeans else 'below'} per-image k-means on the untrained encoder ({kmeans:.2f}). {lesson}")


def describe_mixture_probes(best: float, chance: float, random_probe: float, ndf: int, steps: int) -> str:
    """What the linear probes of the mixture models' r1 read; near chance, a hypothesis for why (no run here
    tests it)."""
    text = (f"The linear probes of $r_1$ read at most {best:.1%} against chance {chance:.1%} (untrained encoder: "
            f"{random_probe:.1%}). ")
    if best - chance >= 0.1:
        return text + "The global feature keeps class information while the mixture segments."
    return text + (f"That is near chance. A hypothesis this notebook does not test: encoders of {ndf} channels trained "
                   f"for {steps} updates on crop views without colour jitter can tell a view's partner by its colours "
                   "alone, and on Shapes colour carries no class (only the outline does). A control would train the "
                   "same encoder without the mixture head, and with colour jitter. Notebook 04's colour-jittered run "
                   "is the one to probe.")


# ----------------------------------------------------------------------------- notebook 02 and appendix A1

def describe_true_critic(infonce: np.ndarray, nwj: np.ndarray, levels, log_k: float, reference, nwj_exact_std) -> str:
    """InfoNCE and NWJ at the true critic ((levels, batches) estimates): InfoNCE's ceiling and its agreement
    with the reference expectation, NWJ's unbiased mean and growing spread."""
    n = infonce.shape[1]
    z_infonce = np.abs(infonce.mean(1) - np.asarray(reference)) / (infonce.std(1, ddof=1) / math.sqrt(n))
    z_nwj = np.abs(nwj.mean(1) - np.asarray(levels)) / (np.asarray(nwj_exact_std) / math.sqrt(n))
    nwj_std = nwj.std(1, ddof=1)
    return (f"**InfoNCE** reports {infonce[0].mean():.2f} nats at MI {levels[0]:g}, {infonce[2].mean():.2f} at "
            f"{levels[2]:g} and {infonce[-1].mean():.2f} at {levels[-1]:g}: {log_k - infonce[-1].mean():.2f} under "
            f"$\\log K$ = {log_k:.2f}. Its spread falls from {infonce[0].std(ddof=1):.3f} to "
            f"{infonce[-1].std(ddof=1):.3f} nats, and its means lie within {z_infonce.max():.1f} standard errors of the "
            f"reference.\n\n**NWJ**'s means lie within {z_nwj.max():.1f} (exact) standard errors of the true MI, while "
            f"its standard deviation grows from {nwj_std[0]:.2f} to {nwj_std[-1]:.2f} nats.")


def describe_clipping(clip_runs: dict, levels, clip: float = 20.0) -> str:
    """What clipping the critic at `clip` did to NWJ and to InfoNCE at the true critic ({clip or None: runs})."""
    plain, clipped = clip_runs[None], clip_runs[clip]
    ratio = plain["nwj"].std(1, ddof=1)[-1] / clipped["nwj"].std(1, ddof=1)[-1]
    shift = clipped["nwj"].mean(1)[-1] - plain["nwj"].mean(1)[-1]
    infonce_shift = np.abs(clipped["infonce"].mean(1) - plain["infonce"].mean(1)).max()
    return (f"At $c = {clip:g}$ and MI {levels[-1]:g}, NWJ's spread shrinks {ratio:.1f}-fold and its mean moves by "
            f"{shift:+.2f} nats: the clip flattens the rare huge ratios that carry the variance. InfoNCE moves by at "
            f"most {infonce_shift:.1e} nats at any level: its scores act only through a softmax and it is capped at "
            "$\\log K$ anyway.")


def describe_controls(controls: dict, levels, clip: float) -> str:
    """A table of the critics trained with and without AMDIM's clip and penalty ({label: score_rms_mi10, bias,
    std}), and what the controls changed for InfoNCE and for NWJ, as measured."""
    table = markdown_table(["critic", f"RMS of raw scores at MI {levels[-1]:g}", f"bias at MI {levels[-1]:g}",
                            f"std at MI {levels[0]:g}", f"std at MI {levels[-1]:g}"],
                           [[label, f"{c['score_rms_mi10']:.1f}", f"{c['bias'][-1]:+.2f}", f"{c['std'][0]:.2f}",
                             f"{c['std'][-1]:.2f}"] for label, c in controls.items()], align="lrrrr")
    changes = []
    for name in ("InfoNCE", "NWJ"):
        plain, controlled = controls[name], controls[f"{name} + AMDIM controls"]
        moved = abs(controlled["bias"][-1]) - abs(plain["bias"][-1])
        changes.append(f"{name}'s bias at MI {levels[-1]:g} goes from {plain['bias'][-1]:+.2f} to "
                       f"{controlled['bias'][-1]:+.2f} nats ({'further from' if moved > 0 else 'closer to'} the truth)")
    return (table + f"\n\nWith the controls (clip at {clip:g}, logit penalty) the InfoNCE critic's raw scores have an "
            f"RMS of {controls['InfoNCE + AMDIM controls']['score_rms_mi10']:.1f} at MI {levels[-1]:g}, against "
            f"{controls['InfoNCE']['score_rms_mi10']:.1f} without. " + "; ".join(changes) + ".")


def describe_all_estimators(stats: list[dict], labels, levels, log_k: float, steps_per_level: int, preset: str) -> dict:
    """Appendix A1's reading of the eight estimators at the staircase's top: {"text": the Markdown, and the lists it
    names: "above_log_k", "above_infonce", "least_biased", "fell_back"}."""
    def at(label, key, index=-1):
        return per_level(stats, label, key)[index]

    top, infonce = levels[-1], at("InfoNCE", "mean")
    found = {"above_log_k": [label for label in labels if at(label, "mean") > log_k],
             "above_infonce": [label for label in labels if label != "InfoNCE" and at(label, "mean") > infonce],
             "least_biased": min(labels, key=lambda label: abs(at(label, "bias"))),
             "fell_back": [label for label in labels if at(label, "mean") < at(label, "mean", 0)]}
    spread_grows = [label for label in labels if at(label, "std") > at(label, "std", 0)]
    text = (f"At MI {top:g} InfoNCE reports {infonce:.2f} nats, under $\\log K$ = {log_k:.2f}. "
            f"Estimators whose mean passes $\\log K$ there: {', '.join(found['above_log_k']) or 'none'}; "
            f"above InfoNCE: {', '.join(found['above_infonce']) or 'none'}. "
            f"Spread larger at MI {top:g} than at MI {levels[0]:g}: {', '.join(spread_grows) or 'none'}. "
            f"Least biased at MI {top:g}: {found['least_biased']} ({at(found['least_biased'], 'bias'):+.2f} nats). "
            f"Reading less at MI {top:g} than at MI {levels[0]:g}: "
            + (", ".join(f"{label} ({at(label, 'mean'):.2f} nats)" for label in found["fell_back"]) or "none") + "."
            + ("" if preset == "paper" else f" With {steps_per_level} steps per level (the paper uses 4,000) the "
               "critics lag behind the staircase; the `paper` preset runs the full experiment."))
    return {"text": text, **found}


# ----------------------------------------------------------------------------- notebook 03

def describe_short_training(before: dict, after: dict, tasks, gap_before: float, gap_after: float) -> str:
    """How the held-out batch's loss moved over 03's short training: the total, the task that fell most and
    the one that fell least (or rose), each by how many nats, and the positives' lead over the negatives."""
    fell = {task: before[task] - after[task] for task in tasks}
    most, least = max(fell, key=fell.get), min(fell, key=fell.get)

    def moved(task):
        return f"fell by {fell[task]:.3f} nats" if fell[task] >= 0 else f"rose by {-fell[task]:.3f} nats"

    return (f"On the held-out batch the total loss went from {before['loss']:.3f} to {after['loss']:.3f}; {most} "
            f"{moved(most)}, the most, and {least} {moved(least)}, the least. The positives' lead over the negatives "
            f"went from {gap_before:+.2f} to {gap_after:+.2f}.")


# ----------------------------------------------------------------------------- notebooks 04 and 05

def headline_table(metrics: dict, batch_size: int, device, n_classes: int) -> str:
    """Notebook 04's headline numbers (`report.training_metrics`) as a two-column table."""
    losses = ", ".join(f"{k} {v:.3f}" for k, v in metrics["final_losses"].items())
    probes = ", ".join(f"{k.removeprefix('test_').removesuffix('_acc')} {100 * v:.1f} %"
                       for k, v in metrics["online_probe_test"].items())
    return markdown_table(["", ""], [
        ["updates", f"{metrics['steps']} of {metrics['total_steps']} (batch {batch_size})"],
        ["wall time", f"{format_seconds(metrics['seconds'])} ({metrics['seconds_source']}) on {device}"],
        ["throughput", f"{metrics['images_per_s']} images/s (both views)"],
        ["final losses", losses],
        ["online probes, test split", f"{probes} (chance {100 / n_classes:.0f} %)"]])


def describe_encoder_source(checkpoint, config, preset: str, trained_now: bool, run: dict, budget: int) -> str:
    """Where notebook 05's encoder came from, its size and compute, and whether its run is unfinished."""
    return (f"{'Trained now' if trained_now else 'Loaded'}: `{checkpoint}`: AMDIM on **{config.dataset}** "
            f"({preset} preset), {config.image_size} px, ndf {config.ndf}, n_rkhs {config.n_rkhs}, "
            f"n_depth {config.n_depth}; {compute_text(run, planned=budget)}."
            + (" **The run is unfinished**: re-run notebook 04 to complete it." if run["steps"] and run["steps"] < budget
               else ""))


def describe_probes(results: dict, chance: float, supervised: dict) -> str:
    """The linear probe's ordering of the feature sets ({name: {linear, mlp, knn}}) and the MLP's gain."""
    linear = {name: r["linear"] for name, r in results.items()}

    def compare(a, b):
        return f"{a} {linear[a]:.1%} {'above' if linear[a] > linear[b] else 'not above'} {b} {linear[b]:.1%}"

    return (f"Linear probe, in this run (chance {chance:.0%}): {compare('AMDIM (trained)', 'random init')}; "
            f"{compare('random init', 'raw pixels')}; {compare('supervised', 'AMDIM (trained)')}, with "
            f"{supervised['steps']:,} updates ({supervised['fraction']:.0%} of AMDIM's). MLP minus linear probe, in "
            "points: " + ", ".join(f"{100 * (r['mlp'] - r['linear']):+.1f} on {name}" for name, r in results.items()) + ".")


def describe_gathering(gathering: dict, share: dict, class_names, knn: dict, chance: float) -> str:
    """How far each t-SNE map gathers the classes ({name: {class: share of same-class neighbours}}; `share`: {name:
    its mean over classes}), the classes that gather most, and the kNN accuracy ({name: accuracy}) that reads the
    same neighbourhoods."""
    most = sorted(gathering["AMDIM (trained)"].items(), key=lambda item: -item[1])[:3]
    accuracy = knn["AMDIM (trained)"]
    return ("Share of each point's 10 nearest neighbours in the map that show its shape: "
            f"{share['AMDIM (trained)']:.2f} on the left, {share['random init']:.2f} on the right "
            f"(chance {chance:.2f}). The classes that gather most on the left: "
            + ", ".join(f"{class_names[c]} ({s:.2f})" for c, s in most) + ".\n\n"
            f"The kNN classifier, which like t-SNE uses only neighbourhoods, is right on {accuracy:.1%} of the test "
            f"images with the trained features and {knn['random init']:.1%} with the random ones (chance {chance:.0%})"
            + (": too close to chance for clusters to show." if accuracy < 2 * chance else "."))


# ----------------------------------------------------------------------------- notebook 07 and appendix A2

def mixture_closing_note(m: dict, preset: str, k: int, grid: int) -> str:
    """Notebook 07's closing note from its metrics: the mixture's IoU beside its baselines, and each k."""
    verdict = ("beats both baselines" if m["beats_baselines"] else
               "does **not** beat both baselines at this scale (see the ablation and the notes below)")
    over_k = ", ".join(f'k = {kk}: IoU {r["iou"]:.3f} (k-means {r["kmeans_iou"]:.3f}), linear probe '
                       f'{100 * r["linear_probe"]:.1f}%' for kk, r in m["ablation"].items())
    return (f"### Closing note ({preset} preset)\n\n"
            f"After {m['steps']} updates on Shapes, the {k}-component mixture's best-matching segment reaches a mean "
            f"IoU of **{m['iou']['mixture']:.3f}** with the object masks on the {grid}×{grid} grid "
            f"({m['iou_7x7']['mixture']:.3f} on the 7×7 grid), against **{m['iou']['kmeans_random']:.3f}** for k-means "
            f"on a random-init encoder's local features ({m['iou_7x7']['kmeans_random']:.3f} on 7×7) and "
            f"**{m['iou']['centre_blob']:.3f}** for the centre blob, over {m['eval_images']} test images: the trained "
            f"mixture {verdict}. Over k: {over_k} (random-init encoder: {100 * m['random_init_linear_probe']:.1f}%).")


def describe_resumption(partial: dict, finished: dict, different: list[str], n_tensors: int, logged: list[int]) -> str:
    """A stopped-and-resumed run against the uninterrupted one: tensors that differ, and whether the log
    holds each update once."""
    return (f"Stopped after {partial['steps']} of {partial['total_steps']} updates, resumed to {finished['steps']}. "
            f"Tensors that differ from the uninterrupted run: **{len(different)}** of {n_tensors}"
            + (f" ({', '.join(different[:3])})." if different else ": the weights are identical.")
            + f" The log holds {'each update once' if logged == sorted(set(logged)) else 'repeated updates'}: "
            f"{len(logged)} lines for {finished['steps']} updates.")
