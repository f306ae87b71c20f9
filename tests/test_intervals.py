"""The verdicts keep their promise, by simulation: interval coverage and family-wise error at 3, 5 and 10 seeds.

Studies come from segsweep.sweep.simulation (image difficulty, a seed effect shared by the groups, training noise,
run x image noise; true values by quadrature). Monte-Carlo error with STUDIES studies is about 0.008 on a coverage of
0.95 and 0.008 on a rate of 0.05; the tolerances are 3 of those. The same checks reject the percentile bootstrap the
report used before (scripts/verdict_calibration.py keeps it for the comparison table).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from segsweep.sweep.intervals import metric_and_influence, shared_image_variance, t_interval
from segsweep.sweep.simulation import REGIMES, Regime, simulate, simulate_counts, true_miou
from segsweep.sweep.verdicts import worse_flags

STUDIES = 800
GROUPS = 5
COVERAGE_TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / STUDIES)
# where run x image noise dominates, the shared test-set variance is estimated a little high: paired coverage 0.960
# over 8000 studies at 5 seeds. Conservative by that much is allowed; too narrow never is.
CONSERVATIVE_SLACK = 0.01
RATE_LIMIT = 0.05 + 3 * math.sqrt(0.05 * 0.95 / STUDIES)
CASES = [(name, seeds) for name in REGIMES for seeds in (3, 5, 10)]


def _calibration():
    spec = importlib.util.spec_from_file_location(
        "verdict_calibration", Path(__file__).resolve().parents[1] / "scripts" / "verdict_calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("regime", "seeds"), CASES)
def test_group_and_paired_intervals_cover_95_percent_and_equal_groups_are_rarely_worse(regime, seeds):
    values, influence = simulate(REGIMES[regime], STUDIES, seeds, [0.0] * GROUPS, seed=seeds)
    truth = true_miou(REGIMES[regime], 0.0)
    group = t_interval(values[:, 0], influence[:, 0])
    coverage = ((group["low"] <= truth) & (truth <= group["high"])).mean()
    assert 0.95 - COVERAGE_TOLERANCE <= coverage <= 0.95 + COVERAGE_TOLERANCE + CONSERVATIVE_SLACK, coverage
    pair = t_interval(values[:, 1] - values[:, 0], influence[:, 1] - influence[:, 0], separate=True)
    paired_coverage = ((pair["low"] <= 0) & (pair["high"] >= 0)).mean()
    assert 0.95 - COVERAGE_TOLERANCE <= paired_coverage <= 0.95 + COVERAGE_TOLERANCE + CONSERVATIVE_SLACK, paired_coverage
    family_wise = worse_flags(values, influence).any(axis=-1).mean()
    assert family_wise <= RATE_LIMIT, family_wise


def test_unequal_groups_intervals_cover_the_true_difference():
    regime = REGIMES["training noise dominant"]
    values, influence = simulate(regime, STUDIES, 5, [0.0, -0.3], seed=11)
    truth = true_miou(regime, -0.3) - true_miou(regime, 0.0)
    assert truth < -0.03
    pair = t_interval(values[:, 1] - values[:, 0], influence[:, 1] - influence[:, 0], separate=True)
    coverage = ((pair["low"] <= truth) & (truth <= pair["high"])).mean()
    assert abs(coverage - 0.95) <= COVERAGE_TOLERANCE, coverage


@pytest.mark.parametrize(("seeds", "power"), [(5, 0.9), (10, 0.99)])
def test_a_readme_sized_difference_is_found(seeds, power):
    calibration = _calibration()
    shifts = [0.0] * (GROUPS - 1) + [calibration.README_SHIFT]
    difference = true_miou(calibration.README_REGIME, calibration.README_SHIFT) - true_miou(calibration.README_REGIME, 0.0)
    assert -0.045 < difference < -0.035  # the README's study: dice ahead of weighted CE by 0.043, of focal by 0.037
    values, influence = simulate(calibration.README_REGIME, STUDIES, seeds, shifts, seed=seeds)
    found = worse_flags(values, influence)[:, -1].mean()
    assert found >= power, found


def test_the_same_checks_reject_the_percentile_bootstrap():
    calibration = _calibration()
    intersection, union = simulate_counts(REGIMES["training noise dominant"], 200, 3, [0.0] * GROUPS, seed=3)
    _, pair_ci, worse = calibration.old_rule(intersection, union)
    paired_coverage = ((pair_ci[:, 0] <= 0) & (pair_ci[:, 1] >= 0)).mean()
    assert paired_coverage < 0.95 - COVERAGE_TOLERANCE
    assert worse.any(axis=-1).mean() > 3 * RATE_LIMIT


def _adaptive(values, influence, stages, looks):
    """Per study and group, the stage at which it was first called worse (0: never), each look on the seeds so far."""
    decided = np.zeros(values.shape[:2], dtype=int)
    for stage in stages:
        flags = worse_flags(values[..., :stage], influence[..., :stage, :], looks=looks)
        decided = np.where((decided == 0) & flags, stage, decided)
    return decided


def test_adaptive_seeds_spend_the_error_over_their_looks():
    stages = [3, 5, 8, 12]
    values, influence = simulate(REGIMES["training noise dominant"], STUDIES, 12, [0.0] * GROUPS, seed=12)
    spent = (_adaptive(values, influence, stages, looks=len(stages)) > 0).any(axis=-1).mean()
    assert spent <= RATE_LIMIT, spent
    # looking four times at the full level would make `worse` easier: the reason the level is split
    unspent = (_adaptive(values, influence, stages, looks=1) > 0).any(axis=-1).mean()
    assert unspent > spent


def test_adaptive_seeds_decide_a_readme_sized_difference_early():
    calibration = _calibration()
    stages = [3, 5, 8, 12]
    shifts = [0.0] * (GROUPS - 1) + [calibration.README_SHIFT]
    values, influence = simulate(calibration.README_REGIME, STUDIES, 12, shifts, seed=5)
    decided = _adaptive(values, influence, stages, looks=len(stages))[:, -1]
    assert (decided > 0).mean() >= 0.99
    assert np.median(decided[decided > 0]) <= 8


def test_influence_is_the_scaled_leave_one_image_out_deviation():
    rng = np.random.default_rng(0)
    union = rng.integers(1, 50, size=(7, 3)).astype(float)
    intersection = np.floor(union * rng.random((7, 3)))
    value, influence = metric_and_influence(intersection, union)
    assert value == pytest.approx(np.mean(intersection.sum(0) / union.sum(0)))
    left_out = np.array([np.mean(np.delete(intersection, i, 0).sum(0) / np.delete(union, i, 0).sum(0)) for i in range(7)])
    assert influence == pytest.approx(np.sqrt(6 / 7) * (left_out - left_out.mean()))
    one_class, one_influence = metric_and_influence(intersection, union, class_index=2)
    assert one_class == pytest.approx(intersection[:, 2].sum() / union[:, 2].sum())
    assert one_influence.shape == (7,)


def test_a_class_absent_from_the_test_set_is_left_out_of_the_mean():
    intersection = np.array([[5.0, 0.0], [3.0, 0.0]])
    union = np.array([[10.0, 0.0], [6.0, 0.0]])
    value, influence = metric_and_influence(intersection, union)
    assert value == pytest.approx(0.5)
    assert np.isfinite(influence).all()
    absent, _ = metric_and_influence(intersection, union, class_index=1)
    assert math.isnan(absent)


def test_without_counts_the_interval_is_the_plain_t_interval_and_one_seed_has_none():
    values = np.array([0.70, 0.74, 0.72])
    result = t_interval(values)
    half = 4.302653 * values.std(ddof=1) / math.sqrt(3)
    assert result["low"] == pytest.approx(0.72 - half) and result["high"] == pytest.approx(0.72 + half)
    assert result["df"] == pytest.approx(2)
    single = t_interval(np.array([0.7]))
    assert math.isnan(single["low"]) and math.isnan(single["p"])


def test_the_shared_image_variance_ignores_each_runs_own_image_noise():
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1, 40)
    own = rng.normal(0, 5, (4, 40))  # large per-run image noise, independent across seeds
    estimate = shared_image_variance(shared + own)
    assert shared_image_variance(np.tile(shared, (4, 1))) == pytest.approx((shared**2).sum())
    assert abs(estimate - (shared**2).sum()) < 0.5 * ((shared + own) ** 2).sum(axis=-1).mean()
    assert shared_image_variance(shared[None, :]) == 0.0


def test_the_regimes_have_the_noise_they_are_named_for():
    training = REGIMES["training noise dominant"]
    values, influence = simulate(training, 200, 5, [0.0, 0.0], seed=1)
    seed_part = (values[:, 1] - values[:, 0]).var(axis=-1, ddof=1).mean() / 5
    image_part = shared_image_variance(influence[:, 1] - influence[:, 0]).mean()
    assert seed_part > 5 * image_part
    images = REGIMES["test-image noise dominant"]
    values, influence = simulate(images, 200, 5, [0.0, 0.0], seed=1)
    seed_part = (values[:, 1] - values[:, 0]).var(axis=-1, ddof=1).mean() / 5
    image_part = shared_image_variance(influence[:, 1] - influence[:, 0]).mean()
    assert image_part > 5 * seed_part
    assert true_miou(Regime("x"), 0.5) > true_miou(Regime("x"), 0.0)
