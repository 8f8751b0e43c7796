"""ui.prose: the sentences the notebooks build from a run's numbers."""

import math

from amdim_lib.run.presets import get_config
from amdim_lib.ui import prose
from amdim_lib.ui.report import chance_losses


def _records(n: int, start: float, end: float, reg: tuple[float, float]) -> list[dict]:
    out = []
    for i in range(n):
        t = i / (n - 1)
        value = start + (end - start) * t
        out.append({"kind": "train", "step": 10 * (i + 1), "1t5": value, "1t7": value, "5t5": value,
                    "reg": reg[0] + (reg[1] - reg[0]) * t})
    return out


def test_losses_are_compared_with_their_chance_levels_over_the_last_quarter():
    chance = chance_losses(64)
    high = max(chance.values()) + 1.0
    text = prose.describe_losses(_records(8, high, high, (0.01, 0.01)), 64)
    assert "No term is below chance yet." in text and "levelling off" in text
    low = min(chance.values()) - 1.0
    text = prose.describe_losses(_records(8, high, low, (0.01, 0.05)), 64)
    assert "Below chance: 1t5, 1t7, 5t5." in text and "still rising" in text
    assert f"5t5 was {high:.2f}, above its line" in text
    assert f"(chance {chance['1t7']:.2f})" in text and math.isfinite(chance["1t7"])


def test_training_is_described_as_loaded_resumed_or_trained():
    summary = {"steps": 100, "seconds": 12.3, "images_per_s": 456.0}
    assert prose.describe_training(summary, 100, "runs/x", "cpu").startswith("**Loaded**")
    assert "at update 40 and trained to update 100" in prose.describe_training(summary, 40, "runs/x", "cpu")
    assert prose.describe_training(summary, 0, "runs/x", "cpu").startswith("**Trained** from scratch: 100 updates")


def test_the_schedule_names_its_milestones_or_their_absence():
    config = get_config("shapes", "demo")
    assert "at epochs [9] (updates [837])" in prose.describe_schedule(config, [837])
    assert prose.describe_schedule(config.replace(milestones=()), []).endswith("no milestone.")


def test_the_staircase_sentence_follows_whether_nwj_ends_above_infonce():
    def rows(nwj_end):
        means = {"InfoNCE": (1.9, 4.5), "NWJ": (1.5, nwj_end), "MINE": (1.7, 3.0)}
        return [{"estimator": label, "mean": m, "std": 0.1 * (i + 1)} for label, pair in means.items()
                for i, m in enumerate(pair)]
    below = prose.describe_staircase(rows(3.5), [2, 10], 5.55)
    assert below.startswith("At MI 10 InfoNCE reports 4.50, NWJ 3.50 and MINE 3.00 nats (log K = 5.55).")
    assert "NWJ still ends below InfoNCE" in below and "from 0.10 to 0.20" in below
    assert "NWJ ends above InfoNCE" in prose.describe_staircase(rows(6.0), [2, 10], 5.55)


def test_the_ablation_outcome_names_both_spreads_and_whether_training_learned_anything():
    comparisons = [{"variant": "single_scale", "reference": "full", "significant": True, "difference": -0.05, "spread": 0.02},
                   {"variant": "dim_baseline", "reference": "single_scale", "significant": False, "difference": -0.01,
                    "spread": 0.02},
                   {"variant": "random_init", "reference": "full", "significant": True, "difference": -0.6, "spread": 0.02}]
    text = prose.describe_ablation_outcome(comparisons, 200, 2, 1000)
    assert text.startswith("With 200 updates per run and 2 seeds, **2 of 3 comparisons exceed their spread** "
                           "(single_scale, random_init); within it: dim_baseline vs single_scale.")
    assert "binomial floor of 1,000 test images where larger: at most 1.6 points" in text
    assert "60.0 points above the untrained encoder" in text and "something measurable" in text
    assert "needs more updates or seeds" in text, "one comparison is within its spread"
    every = [dict(c, significant=True) for c in comparisons]
    assert "needs more updates" not in prose.describe_ablation_outcome(every, 200, 2, 1000)
    comparisons[2].update(significant=False, difference=-0.01)
    assert "too few updates" in prose.describe_ablation_outcome(comparisons, None, 2, 1000)


def test_the_segmentation_sentence_names_the_strongest_baseline_beaten():
    assert "not the stronger claim" not in prose.describe_segmentation(0.5, 0.7, 0.3, 250)
    assert "above the centre blob (0.30) and below per-image k-means" in prose.describe_segmentation(0.5, 0.7, 0.3, 250)
    assert "It beats both" in prose.describe_segmentation(0.8, 0.7, 0.3, 250)
    assert "does not beat the centre guess" in prose.describe_segmentation(0.2, 0.7, 0.3, 250)


def test_a_mixture_probe_near_chance_is_explained_as_a_hypothesis_with_its_control():
    near = prose.describe_mixture_probes(0.15, 0.1, 0.12, 16, 250)
    assert "A hypothesis this notebook does not test" in near and "A control would train" in near
    assert "keeps class information" in prose.describe_mixture_probes(0.6, 0.1, 0.12, 16, 250)


def test_the_controls_sentence_says_which_way_each_bias_moved():
    def critic(rms, bias):
        return {"score_rms_mi10": rms, "bias": [0.0, bias], "std": [0.1, 0.2]}
    controls = {"InfoNCE": critic(30.0, -5.9), "InfoNCE + AMDIM controls": critic(8.0, -6.3),
                "NWJ": critic(12.0, -7.5), "NWJ + AMDIM controls": critic(6.0, -6.8)}
    text = prose.describe_controls(controls, [2.0, 10.0], clip=20.0)
    assert text.count("\n| ") == 4 and "| InfoNCE + AMDIM controls | 8.0 | -6.30 |" in text
    assert "InfoNCE's bias at MI 10 goes from -5.90 to -6.30 nats (further from the truth)" in text
    assert "NWJ's bias at MI 10 goes from -7.50 to -6.80 nats (closer to the truth)" in text


def test_the_appendix_names_the_least_biased_estimator_and_those_that_fell_back():
    rows = [{"estimator": label, "mi": mi, "mean": mean, "bias": mean - mi, "std": std}
            for label, means, stds in (("InfoNCE", (1.8, 4.1), (0.2, 0.05)), ("MINE", (1.9, -0.1), (0.3, 2.0)),
                                       ("SMILE", (1.7, 8.9), (0.4, 1.1)))
            for mi, mean, std in zip((2.0, 10.0), means, stds)]
    reading = prose.describe_all_estimators(rows, ["InfoNCE", "MINE", "SMILE"], [2.0, 10.0], math.log(64), 500, "demo")
    assert reading["least_biased"] == "SMILE" and reading["fell_back"] == ["MINE"]
    assert reading["above_log_k"] == ["SMILE"] and reading["above_infonce"] == ["SMILE"]
    assert "Least biased at MI 10: SMILE (-1.10 nats)" in reading["text"] and "MINE (-0.10 nats)" in reading["text"]


def test_the_short_training_sentence_says_by_how_much_each_task_moved():
    before = {"1t5": 5.80, "1t7": 6.48, "5t5": 7.24, "loss": 19.78}
    after = {"1t5": 5.58, "1t7": 6.50, "5t5": 5.55, "loss": 17.63}
    text = prose.describe_short_training(before, after, ("1t5", "1t7", "5t5"), 0.06, 0.19)
    assert "5t5 fell by 1.690 nats, the most" in text and "1t7 rose by 0.020 nats, the least" in text
    assert "+0.06 to +0.19" in text
