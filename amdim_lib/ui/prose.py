"""Prose built from a run's numbers: each function returns the Markdown a notebook shows under a figure,
so that the cell a reader sees is one call and the sentence is tested like any other code."""

from __future__ import annotations

from .report import chance_losses, split_records


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
    def per_level(label: str, key: str) -> list[float]:
        return [r[key] for r in stats if r["estimator"] == label]

    infonce, nwj, mine = (per_level(label, "mean") for label in ("InfoNCE", "NWJ", "MINE"))
    nwj_std, infonce_std = per_level("NWJ", "std"), per_level("InfoNCE", "std")
    return (f"At MI {levels[-1]:g} InfoNCE reports {infonce[-1]:.2f}, NWJ {nwj[-1]:.2f} and MINE {mine[-1]:.2f} "
            f"nats (log K = {log_k:.2f}). NWJ's standard deviation goes from {nwj_std[0]:.2f} to {nwj_std[-1]:.2f} "
            f"nats between MI {levels[0]:g} and {levels[-1]:g}, InfoNCE's from {infonce_std[0]:.2f} to "
            f"{infonce_std[-1]:.2f}. "
            + ("NWJ ends above InfoNCE: its missing cap shows." if nwj[-1] > infonce[-1] else
               "NWJ still ends below InfoNCE: without a cap it could go higher, but at this preset its critic has not "
               "learned enough, and its noise is large."))


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
