"""The correlated-Gaussian MI benchmark of amdim_lib.analysis.mi_benchmark: the staircase, the true-critic
estimates against their reference values and formulas, training critics on it, and its tables."""

import math

import numpy as np
import pytest
import torch

from amdim_lib.core import bounds as B
from amdim_lib.analysis import mi_benchmark


def test_staircase_schedule():
    steps = mi_benchmark.mi_staircase((2, 4, 6), 3)
    assert steps.tolist() == [2, 2, 2, 4, 4, 4, 6, 6, 6]


def test_nwj_standard_deviation_formula_matches_monte_carlo():
    d, k, mi = 2, 4, 0.25
    rho = B.rho_from_mi(mi, d)
    g = torch.Generator().manual_seed(0)
    x, y = B.sample_correlated_gaussian(k, d, rho, g, (200_000,), dtype=torch.float64)
    values = B.nwj(B.true_critic(x, y, rho) + 1.0)
    assert values.mean().item() == pytest.approx(mi, abs=0.01)
    assert values.std().item() == pytest.approx(mi_benchmark.nwj_true_critic_std(mi, d, k), rel=0.02)
    # the cross term of the formula has the closed form 1 / (1 - rho^4) per coordinate
    r = 0.6
    one = mi_benchmark.nwj_true_critic_std(B.mi_from_rho(r, 1), 1, 3) ** 2
    expected = r * r / 3 + (1 / (1 - r * r) - 1 + 1 / (1 - r ** 4) - 1) / 6
    assert one == pytest.approx(expected)


def test_true_critic_infonce_reference_table_matches_the_issue():
    issue = {2.0: 1.82, 4.0: 3.07, 6.0: 3.74, 8.0: 4.03, 10.0: 4.12}
    for mi, value in issue.items():
        assert mi_benchmark.INFONCE_TRUE_CRITIC_D20_K64[mi] == pytest.approx(value, abs=0.01)
    mean, se = mi_benchmark.infonce_true_critic_reference(4.0, n_batches=4_000, seed=3)
    assert abs(mean - mi_benchmark.INFONCE_TRUE_CRITIC_D20_K64[4.0]) < 4 * se + 0.001


@pytest.fixture(scope="module")
def true_critic_runs():
    # The issue's check: 500 batches of 64 per MI level, fixed seed.
    return mi_benchmark.true_critic_estimates(mi_benchmark.MI_LEVELS, d=20, batch_size=64, n_batches=500, seed=0)


def test_true_critic_infonce_matches_its_expectation_and_stays_below_log_k(true_critic_runs):
    values = true_critic_runs["infonce"]
    assert values.shape == (5, 500)
    assert values.max() <= math.log(64)
    for row, mi in enumerate(mi_benchmark.MI_LEVELS):
        se = values[row].std(ddof=1) / math.sqrt(500)
        assert abs(values[row].mean() - mi_benchmark.INFONCE_TRUE_CRITIC_D20_K64[mi]) < 4 * se, mi
        assert values[row].mean() < min(mi, math.log(64))


def test_true_critic_nwj_is_unbiased_with_spread_growing_in_mi(true_critic_runs):
    values = true_critic_runs["nwj"]
    stds = values.std(1, ddof=1)
    for row, mi in enumerate(mi_benchmark.MI_LEVELS):
        analytic = mi_benchmark.nwj_true_critic_std(mi, 20, 64)
        assert abs(values[row].mean() - mi) < 4 * analytic / math.sqrt(500), mi
        assert stds[row] < 1.2 * analytic   # heavy tails: the sample std falls short of the exact one
    assert stds[0] == pytest.approx(mi_benchmark.nwj_true_critic_std(2.0, 20, 64), rel=0.15)
    assert np.all(np.diff(stds) > 0)
    assert np.all(np.diff([mi_benchmark.nwj_true_critic_std(mi, 20, 64) for mi in mi_benchmark.MI_LEVELS]) > 0)


def test_training_a_critic_raises_infonce_towards_the_true_value():
    result = mi_benchmark.train_staircase(["infonce", "nwj", "mine", "alpha"], levels=(2.0,), steps_per_level=150, seed=0)
    assert set(result.estimates) == {"InfoNCE", "NWJ", "MINE", "alpha (0.01)"}
    infonce = result.estimates["InfoNCE"]
    assert infonce.shape == (150,) and np.isfinite(infonce).all()
    assert infonce[-50:].mean() > infonce[:10].mean() + 0.7
    assert infonce.max() <= math.log(64)
    assert result.true_mi.tolist() == [2.0] * 150


def test_training_options_clip_and_regularise_the_scores():
    specs = {"clipped": {"estimator": "nwj", "tclip": 0.5}, "plain": {"estimator": "nwj"},
             "regularised": {"estimator": "infonce", "reg_weight": 0.05}}
    threads = torch.get_num_threads()
    result = mi_benchmark.train_staircase(specs, levels=(4.0,), steps_per_level=30, batch_size=16, hidden=32, critic="concat")
    assert torch.get_num_threads() == threads                       # restored after training on one thread
    assert list(result.estimates) == ["clipped", "plain", "regularised"]
    assert np.nanmax(result.estimates["clipped"]) <= 0.5 + 1e-6   # NWJ <= max f <= c
    assert set(result.score_rms) == set(specs) and np.isfinite(result.score_rms["plain"]).all()


def test_clipping_the_true_critic_keeps_a_valid_bound_and_shrinks_nwj_spread():
    runs = mi_benchmark.clipped_true_critic_estimates((None, 5.0), (2.0, 8.0), n_batches=100, seed=4)
    plain = mi_benchmark.true_critic_estimates((2.0, 8.0), n_batches=100, seed=4)
    assert np.array_equal(runs[None]["nwj"], plain["nwj"])
    assert (runs[5.0]["nwj"] <= 5.0).all()
    assert runs[5.0]["nwj"][1].std() < runs[None]["nwj"][1].std() / 3
    assert (runs[5.0]["infonce"].mean(1) <= np.array([2.0, 8.0])).all()


def test_moving_average_and_phase_statistics():
    values = np.array([1.0, 3.0, np.nan, 5.0, np.inf, 7.0])
    assert np.allclose(mi_benchmark.moving_average(values, 2), [1.0, 2.0, 3.0, 5.0, 5.0, 7.0])
    assert np.allclose(mi_benchmark.moving_average(values, 10), [1.0, 2.0, 2.0, 3.0, 3.0, 4.0])
    result = mi_benchmark.StaircaseResult({"A": np.array([0.0, 2.0, 1.0, 3.0, 5.0, np.nan])}, mi_benchmark.mi_staircase((1.0, 4.0), 3),
                               (1.0, 4.0), 3, 16, 0.0)
    rows = mi_benchmark.phase_statistics(result, tail=2 / 3)
    assert rows[0] == {"estimator": "A", "mi": 1.0, "mean": 1.5, "bias": 0.5, "std": pytest.approx(math.sqrt(0.5)),
                       "n": 2, "non_finite": 0}
    assert rows[1]["mean"] == 5.0 and rows[1]["non_finite"] == 1
    table = mi_benchmark.bias_std_table(rows)
    assert "| A | +0.50 / 0.71 |" in table
    assert mi_benchmark.statistics_table(rows, "std").count("\n") == 2


def test_the_controls_figure_shows_every_curve_whole():
    from amdim_lib.ui import bound_plots
    true_mi = mi_benchmark.mi_staircase((2.0, 10.0), 20)
    strayed = np.concatenate([np.full(20, 1.5), np.linspace(0.0, -40.0, 20)])  # an NWJ critic far below zero
    estimates = {"NWJ": strayed, "NWJ + AMDIM controls": np.full(40, 3.0), "InfoNCE": np.full(40, 3.5),
                 "InfoNCE + AMDIM controls": np.full(40, 3.4)}
    result = mi_benchmark.StaircaseResult(estimates, true_mi, (2.0, 10.0), 20, 64, 0.0,
                                          score_rms={label: np.ones(40) for label in estimates})
    fig = bound_plots.plot_controls(result, [("InfoNCE", "InfoNCE + AMDIM controls"), ("NWJ", "NWJ + AMDIM controls")],
                                    window=2)
    low, high = fig.axes[0].get_ylim()
    assert low < mi_benchmark.moving_average(strayed, 2).min() and high > 10.0
