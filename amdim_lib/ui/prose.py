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
