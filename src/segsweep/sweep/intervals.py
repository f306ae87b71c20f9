"""Intervals of a sweep's metrics: a t-interval over seeds, with the test set's sampling variance added once.

A group's result is the mean over its seeds of each run's dataset-level metric on one fixed test set. Its error has
two parts. Training randomness (a seed's weights, data order, and how that run errs on each image) differs from seed
to seed: the sample variance of the per-seed values estimates it, whatever its mix. The sampling of the test images
is shared by every run: an image that is hard for one run is hard for the others, and no spread across seeds shows
it. Its variance is estimated from the per-image intersection and union counts (the infinitesimal jackknife, i.e. the
jackknife over test images) as the covariance of the runs' per-image influences *across different seeds*: the part
of the image effect that the seeds share, so the run x image part, already in the seeds' spread, is not counted
twice. The interval is ``mean ± t(df) sqrt(s²/S + shared)`` with Welch-Satterthwaite degrees of freedom; the test
behind a verdict gives each part its own t quantile, which holds at the small levels of a Holm adjustment.

A percentile bootstrap over seeds, the method this replaces, is [min, max] of 3 seeds (any 3 same-sign differences
exclude 0, 1 in 4 for equal groups), and resampling seeds and images together counts run x image variance twice.
``tests/test_intervals.py`` shows the coverage of both rules by simulation (sweep/simulation.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
# p-values are found by bisection down to this level (below it: 0): far past any Holm threshold
P_FLOOR = 1e-12
P_BISECTIONS = 48


@dataclass
class SeedResult:
    """One finished job of a group: its test metric and, when recorded, its per-image counts [images, classes]."""

    seed: str
    value: float
    intersection: np.ndarray | None = None
    union: np.ndarray | None = None


@dataclass
class Estimate:
    """A mean over seeds with its confidence interval, standard error, degrees of freedom and two-sided p (vs 0)."""

    mean: float
    low: float
    high: float
    se: float
    df: float
    p: float
    seeds: int
    seed_sd: float  # sample std of the per-seed values
    image_var: float  # the shared test-set variance added to seed_sd**2 / seeds


def metric_and_influence(
    intersection: np.ndarray, union: np.ndarray, class_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A run's dataset-level mIoU (or one class's IoU) from counts [..., images, classes], and each image's influence
    on it [..., images]: the jackknife's scaled leave-one-image-out deviations, so ``sum(influence**2)`` is the
    jackknife variance of the metric over test sets. (The first-order, infinitesimal jackknife underestimated the
    variance of these ratios by 10% in simulation; leaving each image out does not.) Classes without union are left
    out of the mean, as in the metric."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    images = intersection.shape[-2]
    total_i, total_u = intersection.sum(axis=-2, keepdims=True), union.sum(axis=-2, keepdims=True)
    left_i, left_u = total_i - intersection, total_u - union  # [..., images, classes]: image i left out
    value, left_out = _mean_iou(total_i[..., 0, :], total_u[..., 0, :], class_index), _mean_iou(left_i, left_u, class_index)
    deviation = left_out - left_out.mean(axis=-1, keepdims=True)
    return value, np.sqrt((images - 1) / images) * deviation


def _mean_iou(intersection: np.ndarray, union: np.ndarray, class_index: int | None) -> np.ndarray:
    """mIoU over the classes with union (or one class's IoU, NaN without union) of summed counts [..., classes]."""
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, intersection / np.where(present, union, 1.0), np.nan)
        if class_index is not None:
            return iou[..., class_index]
        count = present.sum(axis=-1)
        return np.where(count > 0, np.where(present, iou, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)


def shared_image_variance(influence: np.ndarray) -> np.ndarray:
    """The test-set variance that the seeds share: the mean over pairs of different seeds of their influences' inner
    product, from influences [..., seeds, images] (0 where negative by chance or with fewer than 2 seeds)."""
    seeds = influence.shape[-2]
    if seeds < 2:
        return np.zeros(influence.shape[:-2])
    total = influence.sum(axis=-2)
    cross = (total**2).sum(axis=-1) - (influence**2).sum(axis=(-2, -1))
    return np.maximum(cross / (seeds * (seeds - 1)), 0.0)


def _half_width(alpha: np.ndarray, seed_var: np.ndarray, image_var: np.ndarray, seeds: int, images: int) -> np.ndarray:
    """The tests' half-width: each variance part with its own t quantile (seeds - 1 and images - 1 degrees of freedom),
    combined as in the modified large-sample method for sums of variance components. The interval's Satterthwaite df,
    estimated from the same few seeds, rejected equal groups 4x too often at the small levels a Holm adjustment uses
    (p < 1/200 in 2.3% of 3-seed studies): a seed spread small by chance inflates that df."""
    # scipy.stats (0.9 s) imported where a quantile is taken: a multirun's launching process imports the report's
    # modules before it starts its workers, and computes nothing with them until its jobs have run
    from scipy import stats as scipy_stats

    seed_t = scipy_stats.t.ppf(1 - alpha / 2, seeds - 1)
    image_t = scipy_stats.t.ppf(1 - alpha / 2, max(images - 1, 1))
    return np.sqrt(seed_t**2 * seed_var + image_t**2 * image_var)


def _p_value(mean: np.ndarray, seed_var: np.ndarray, image_var: np.ndarray, seeds: int, images: int) -> np.ndarray:
    """The level at which the interval's edge reaches 0: bisection on log(alpha), as the half-width falls with alpha."""
    low, high = np.full(mean.shape, math.log(P_FLOOR)), np.zeros(mean.shape)
    for _ in range(P_BISECTIONS):
        middle = (low + high) / 2
        too_wide = _half_width(np.exp(middle), seed_var, image_var, seeds, images) > np.abs(mean)
        low, high = np.where(too_wide, middle, low), np.where(too_wide, high, middle)
    p = np.exp((low + high) / 2)
    return np.where(np.isnan(mean), np.nan, np.where(p <= P_FLOOR * 1.01, 0.0, p))


def t_interval(
    values: np.ndarray, influence: np.ndarray | None = None, confidence: float = CONFIDENCE, separate: bool = False
) -> dict[str, np.ndarray]:
    """Mean of per-seed ``values`` [..., seeds] with its interval, se, df and the p of a test against 0 (for the
    verdicts' Holm adjustment); ``influence`` [..., seeds, images] adds the shared test-set variance. NaN interval
    with fewer than 2 seeds. ``separate``: the interval of the test (each variance part with its own quantile), so
    that it excludes 0 exactly when the test rejects at 1 - ``confidence``: the paired differences use it."""
    values = np.asarray(values, dtype=np.float64)
    seeds = values.shape[-1]
    mean = values.mean(axis=-1)
    if seeds < 2:
        nan = np.full(mean.shape, np.nan)
        return {"mean": mean, "low": nan, "high": nan, "se": nan, "df": nan, "p": nan, "seed_sd": nan, "image_var": nan}
    seed_var = values.var(axis=-1, ddof=1) / seeds
    image_var = np.zeros(mean.shape) if influence is None else shared_image_variance(influence)
    images = 2 if influence is None else influence.shape[-1]
    var = seed_var + image_var
    # the interval: Welch-Satterthwaite degrees of freedom, accurate at the 95% level (coverage in tests/test_intervals)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(var > 0, var**2 / (seed_var**2 / (seeds - 1) + image_var**2 / max(images - 1, 1)), np.inf)
    from scipy import stats as scipy_stats  # see _half_width

    if separate:
        half = _half_width(np.array(1 - confidence), seed_var, image_var, seeds, images)
    else:
        half = scipy_stats.t.ppf(0.5 + confidence / 2, np.minimum(df, 1e9)) * np.sqrt(var)
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "se": np.sqrt(var),
        "df": df,
        "p": _p_value(mean, seed_var, image_var, seeds, images),
        "seed_sd": np.sqrt(seed_var * seeds),
        "image_var": image_var,
    }


def _usable(results: list[SeedResult]) -> bool:
    """Every result has counts of one shape: the test-set variance can be estimated."""
    shapes = {None if result.intersection is None else result.intersection.shape for result in results}
    return len(shapes) == 1 and None not in shapes


def _per_seed(results: list[SeedResult], class_index: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-seed values as the runs recorded them and, when every run has counts, their per-image influences."""
    values = np.array([result.value for result in results], dtype=np.float64)
    if not _usable(results):
        return values, None
    _, influence = metric_and_influence(
        np.stack([result.intersection for result in results]), np.stack([result.union for result in results]), class_index
    )
    return values, influence


def _estimate(values: np.ndarray, influence: np.ndarray | None, confidence: float, separate: bool = False) -> Estimate:
    keep = np.isfinite(values)
    values = values[keep]
    # leaving out the only image of a class leaves its IoU undefined: that image adds nothing to the estimate
    influence = None if influence is None else np.nan_to_num(influence[keep], nan=0.0)
    if values.size == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    result = t_interval(values, influence, confidence=confidence, separate=separate)
    fields = ("mean", "low", "high", "se", "df", "p")
    return Estimate(
        *(float(result[key]) for key in fields), int(values.size), float(result["seed_sd"]), float(result["image_var"])
    )


def group_estimate(results: dict[str, SeedResult], class_index: int | None = None, confidence: float = CONFIDENCE) -> Estimate:
    """A group's mean metric over its seeds and its confidence interval."""
    values, influence = _per_seed([results[seed] for seed in sorted(results)], class_index)
    return _estimate(values, influence, confidence)


def paired_estimate(
    group: dict[str, SeedResult], other: dict[str, SeedResult], class_index: int | None = None, confidence: float = CONFIDENCE
) -> Estimate | None:
    """``group - other`` over the seeds both have (runs of one seed share initial weights and data order); None when
    they share no seed."""
    seeds = sorted(set(group) & set(other))
    if not seeds:
        return None
    a, a_influence = _per_seed([group[seed] for seed in seeds], class_index)
    b, b_influence = _per_seed([other[seed] for seed in seeds], class_index)
    both = a_influence is not None and b_influence is not None and a_influence.shape == b_influence.shape
    return _estimate(a - b, a_influence - b_influence if both else None, confidence, separate=True)
