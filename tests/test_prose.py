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
