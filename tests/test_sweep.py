"""The ablation sweep: variants are configurations, runs are resumable, the significance rule."""

import json

import pytest

from amdim_lib.analysis import sweep
from amdim_lib.run.build import budget_config
from amdim_lib.run.presets import Config, get_config
from amdim_lib.analysis.sweep import VARIANTS, Scaled, Variant

# A few hundred images of the smoke model: each run takes about a second.
TINY = dict(train_size=128, test_size=100, batch_size=16, log_every=1)
PROBE = dict(probe_train=128, probe_test=100)  # 128 -> 13 held out for C, at least one per class


@pytest.fixture
def tiny():
    return get_config("shapes", "smoke", **TINY)


@pytest.mark.parametrize("preset", ["smoke", "demo", "paper"])
def test_every_named_variant_is_a_valid_configuration(preset):
    base = get_config("shapes", preset)
    for name, variant in VARIANTS.items():
        config = sweep.variant_config(base, variant, seed=3)
        assert isinstance(config, Config) and config.seed == 3, name
        assert config.dataset == base.dataset and config.epochs == base.epochs, name
    demo = get_config("shapes", "demo")
    assert sweep.variant_config(demo, VARIANTS["single_scale"]).tasks == ("1t7",)
    # Local DIM as its paper defines it: one unaugmented view, global -> local, no clip or penalty; same encoder.
    dim = sweep.variant_config(demo, VARIANTS["dim_baseline"])
    assert dim.tasks == ("1t7",) and dim.augment == "none" and dim.tclip is None and dim.reg_weight == 0.0
    assert (dim.ndf, dim.n_rkhs, dim.n_depth) == (demo.ndf, demo.n_rkhs, demo.n_depth)
    assert sweep.variant_config(demo, VARIANTS["tclip_none"]).tclip is None
    assert sweep.variant_config(demo, VARIANTS["no_reg"]).reg_weight == 0.0
    wide = sweep.variant_config(demo, VARIANTS["wide"])
    assert (wide.ndf, wide.n_rkhs) == (2 * demo.ndf, 2 * demo.n_rkhs)
    assert {v.method for v in VARIANTS.values()} == {"amdim", "supervised", "random"}


def test_a_variant_is_a_dict_of_overrides_and_unknown_keys_are_named():
    base = get_config("shapes", "smoke")
    resolved = sweep.resolve_variants({"mine": {"augment": "crop", "ndf": Scaled("ndf", 2)}})
    assert resolved["mine"].question == "custom"
    config = sweep.variant_config(base, resolved["mine"])
    assert config.augment == "crop" and config.ndf == 2 * base.ndf
    with pytest.raises(ValueError, match="no_such_key"):
        sweep.variant_config(base, Variant({"no_such_key": 4}))
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        sweep.resolve_variants(["full", "nope"])
    assert list(sweep.resolve_variants("all")) == list(VARIANTS)
    assert list(sweep.resolve_variants(None, default=["full", "supervised"])) == ["full", "supervised"]
    for preset in ("smoke", "demo", "paper", "paper-192"):
        scale = sweep.sweep_scale(preset)
        assert scale["n_seeds"] >= 2 and set(scale["variants"]) <= set(VARIANTS)
        # Every sweep holds AMDIM's main contrast (against local DIM) and the untrained encoder; the supervised
        # baseline is notebook 05's at the demo preset.
        assert {"full", "dim_baseline", "random_init"} <= set(scale["variants"])


def test_budget_sets_the_updates_and_a_flat_schedule(tiny):
    config, steps = budget_config(tiny, 11)  # 8 updates per epoch
    assert steps == 11 and config.epochs == 2 and config.milestones == () and config.warmup_steps == 1
    same, full = budget_config(tiny, None)
    assert same == tiny and full == 8 * tiny.epochs
    with pytest.raises(ValueError):
        budget_config(tiny, 0)


def test_a_sweep_writes_results_and_resumes_without_retraining(tiny, tmp_path):
    variants, seeds = ["full", "dim_baseline"], [0, 1]
    done = []

    def stop_after_first(record):
        done.append(record)
        raise KeyboardInterrupt("interrupted after the first run")

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(tiny, variants, seeds, tmp_path, steps=3, progress=False, on_result=stop_after_first, **PROBE)
    first = tmp_path / "full" / "seed0" / "result.json"
    assert first.is_file() and not (tmp_path / "full" / "seed1").exists()
    mtime = first.stat().st_mtime_ns

    lines = []
    records = sweep.run_sweep(tiny, variants, seeds, tmp_path, steps=3, progress=lines.append, **PROBE)
    assert [(r["variant"], r["seed"]) for r in records] == [(v, s) for v in variants for s in seeds]
    assert [r["status_now"] for r in records] == ["loaded", "trained", "trained", "trained"]
    assert first.stat().st_mtime_ns == mtime, "a finished run is not trained again"
    assert len(lines) == 4 and "loaded" in lines[0]
    assert sweep.steps_trained_now(records) == 9
    for r in records:
        assert r["steps"] == 3 and r["status"] == "done" and 0 <= r["linear"] <= 1 and 0 <= r["knn"] <= 1
        assert r["probe_train"] == 128 and r["probe_test"] == 100
    saved = json.loads((tmp_path / "dim_baseline" / "seed1" / "result.json").read_text())
    assert saved["config"]["tasks"] == ["1t7"] and saved["config"]["augment"] == "none" and saved["config"]["seed"] == 1
    assert len(sweep.load_results(tmp_path)) == 4

    # A result written before a configuration key existed (here the mixture's settings) still matches.
    older = {**saved, "config": {k: v for k, v in saved["config"].items() if not k.startswith("mixture_")}}
    (tmp_path / "dim_baseline" / "seed1" / "result.json").write_text(json.dumps(older))
    again = sweep.run_sweep(tiny, variants, seeds, tmp_path, steps=3, progress=False, **PROBE)
    assert all(r["status_now"] == "loaded" for r in again) and sweep.steps_trained_now(again) == 0
    with pytest.raises(ValueError, match="another budget"):
        sweep.run_sweep(tiny, ["full"], [0], tmp_path, steps=4, progress=False, **PROBE)

    table = sweep.sweep_table(records)
    assert [r["variant"] for r in table] == variants and all(len(r["linear_values"]) == 2 for r in table)
    metrics = sweep.sweep_metrics(table, sweep.significant_differences(table), records)
    assert set(metrics["variants"]) == set(variants) and metrics["total_steps"] == 12


def test_a_run_killed_mid_training_continues_from_its_checkpoint(tiny, tmp_path):
    from amdim_lib.run.runfolder import read_metrics
    from amdim_lib.run.train import train

    run_dir = tmp_path / "full" / "seed0"
    config, steps = budget_config(sweep.variant_config(tiny, VARIANTS["full"], 0), 5)
    train(config, run_dir, stop_at_step=2, progress=False)  # as if the sweep had been stopped at update 2
    record = sweep.run_one("full", VARIANTS["full"], tiny, 0, run_dir, steps=5, **PROBE)
    assert record["resumed_from"] == 2 and record["steps"] == 5 and record["status_now"] == "trained"
    assert [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"] == [1, 2, 3, 4, 5]


def test_baselines_and_a_diverged_run_are_recorded(tiny, tmp_path, monkeypatch):
    records = sweep.run_sweep(tiny, ["supervised", "random_init"], [0], tmp_path, steps=2, progress=False, **PROBE)
    supervised, random_init = records
    assert supervised["method"] == "supervised" and supervised["steps"] == 2
    assert (tmp_path / "supervised" / "seed0" / "supervised.pt").is_file()
    assert random_init["steps"] == 0 and 0 <= random_init["linear"] <= 1

    import amdim_lib.run.train

    def diverge(*args, **kwargs):
        raise FloatingPointError("non-finite values at step 2: {'loss': nan}. Nothing was updated")
    monkeypatch.setattr(amdim_lib.run.train, "train", diverge)
    records = sweep.run_sweep(tiny, ["tclip_none"], [0, 1], tmp_path, steps=2, progress=False, **PROBE)
    assert all(r["status"] == "diverged" and r["linear"] is None for r in records)
    row = sweep.sweep_table(records)[0]
    assert row["diverged"] == 2 and row["linear_mean"] is None
    assert any("every run diverged" in line for line in sweep.findings([row], []))


def _records(values: dict[str, list[float]]) -> list[dict]:
    return [{"variant": name, "seed": seed, "steps": 10, "status": "done", "linear": v, "knn": v}
            for name, accuracies in values.items() for seed, v in enumerate(accuracies)]


def test_significance_rule_on_hand_made_numbers():
    table = sweep.sweep_table(_records({"full": [0.50, 0.52], "single_scale": [0.40, 0.41],
                                        "augment_crop": [0.47, 0.55], "no_reg": [0.30], "dim_baseline": [0.30, 0.31]}))
    full = table[0]
    assert full["linear_mean"] == pytest.approx(0.51) and full["linear_std"] == pytest.approx(0.02 / 2 ** 0.5)
    listed = sweep.significant_differences(table)
    comparisons = {c["variant"]: c for c in listed if c["reference"] == "full"}
    contrasts = [c for c in listed if c["reference"] != "full"]  # pairs isolating one factor, when both ran
    assert [(c["variant"], c["reference"]) for c in contrasts] == [("dim_baseline", "single_scale")]
    assert contrasts[0]["difference"] == pytest.approx(-0.10) and contrasts[0]["question"] == "views"
    assert sweep.significant_names(listed) == ["single_scale", "dim_baseline", "dim_baseline vs single_scale"]
    assert comparisons["single_scale"]["significant"]  # 10.5 points apart, spread ~2.1
    assert comparisons["single_scale"]["difference"] == pytest.approx(-0.105)
    assert not comparisons["augment_crop"]["significant"]  # 0 points apart
    assert not comparisons["no_reg"]["significant"], "one seed has no spread to compare with"
    # The rule on its own: 3 points apart count against spreads of 1 + 1 points, not against 2 + 2.
    for spread, counts in ((0.01, True), (0.02, False)):
        rows = [{"variant": name, "linear_mean": mean, "linear_std": spread, "linear_values": [mean] * 2}
                for name, mean in (("a", 0.50), ("b", 0.47))]
        assert sweep.compare(rows, "a", "b")["significant"] is counts
    with pytest.raises(ValueError, match="reference"):
        sweep.significant_differences(table, reference="missing")
    # Two seeds that agree closely by chance: the spread is at least the test set's binomial error.
    close = sweep.sweep_table([{**r, "probe_test": 1000} for r in _records({"full": [0.150, 0.151],
                                                                            "single_scale": [0.135, 0.136]})])
    assert close[0]["n_test"] == 1000
    assert sweep.spread_of(close[0]) == pytest.approx((0.1505 * 0.8495 / 1000) ** 0.5)
    assert not sweep.significant_differences(close)[0]["significant"]  # 1.5 points < ~2.2 points of spread
    assert sweep.significant_differences(sweep.sweep_table(_records({"full": [0.150, 0.151],
                                                                     "single_scale": [0.135, 0.136]})))[0]["significant"]

    text = sweep.table_markdown(table, listed)
    assert "| single_scale |" in text and "-10.5 *" in text and "51.0 ± 1.4" in text
    lines = sweep.findings(table, listed)
    assert any(line.startswith("**dim_baseline vs single_scale** (augmentation") for line in lines)
    assert any("single_scale" in line and "exceeds" in line for line in lines)
    assert any("augment_crop" in line and "not supported at this scale" in line for line in lines)


def test_plot_has_error_bars_and_labelled_axes():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = sweep.sweep_table(_records({"full": [0.50, 0.52], "dim_baseline": [0.30, 0.33]}))
    fig = sweep.plot_sweep(table, chance=0.1, title="t")
    axes = fig.axes
    assert len(axes) == 2 and all(ax.get_ylabel() == "test accuracy (%)" for ax in axes)
    assert all(ax.get_ylim()[0] == 0.0 for ax in axes), "bars start at zero"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["full", "dim_baseline"]
    from matplotlib.container import BarContainer, ErrorbarContainer
    kinds = {type(c) for c in axes[0].containers}
    assert BarContainer in kinds and ErrorbarContainer in kinds
    plt.close(fig)


def test_cli_sweep_prints_the_table(tmp_path, capsys):
    from amdim_lib.__main__ import main

    args = ["sweep", "--preset", "smoke", "--variants", "full", "random_init", "--seeds", "0", "1", "--steps", "2",
            "--out", str(tmp_path)] + [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| full |" in out and "| random_init |" in out and "exceeds" in out.lower()
    assert (tmp_path / "table.md").is_file() and (tmp_path / "summary.json").is_file()
    assert main(args) == 0 and "loaded" in capsys.readouterr().out
