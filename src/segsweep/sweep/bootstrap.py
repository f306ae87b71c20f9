"""Uncertainty of a sweep's verdicts: a (seed, image) bootstrap of each group's test mIoU and of paired differences.

Runs that share a ``seed`` share their initial weights and data order, so two groups are compared seed by seed
(paired). Each resample draws seeds with replacement (training randomness) and test images with replacement
(sampling of the test set); a group's metric in a resample is the mean over the drawn seeds of the dataset-level
IoU recomputed from the drawn images' intersection and union counts. Intervals are percentile intervals.
Without per-image counts (older runs) only the seeds are resampled, from the recorded test metrics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RESAMPLES = 2000
# a fixed seed: the report of a sweep dir is the same every time it is written
BOOTSTRAP_SEED = 20261124
MAX_SEEDS_SUGGESTED = 100


@dataclass
class SeedResult:
    """One finished job of a group: its test metric and, when recorded, its per-image counts [images, classes]."""

    seed: str
    value: float
    intersection: np.ndarray | None = None
    union: np.ndarray | None = None


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of bootstrap samples (NaN samples left out); (NaN, NaN) without any."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _metric_of_counts(intersection: np.ndarray, union: np.ndarray, class_index: int | None) -> np.ndarray:
    """mIoU (``class_index`` None) or one class's IoU of summed counts [..., classes]; NaN where a class has no union."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    if class_index is not None:
        return iou[..., class_index]
    present = np.isfinite(iou)
    return np.where(present.any(axis=-1), np.nansum(iou, axis=-1) / np.maximum(present.sum(axis=-1), 1), np.nan)


def _with_counts(results: Sequence[SeedResult]) -> bool:
    shapes = {None if result.intersection is None else result.intersection.shape for result in results}
    return len(shapes) == 1 and None not in shapes


def _resampled(
    groups: Sequence[Mapping[str, SeedResult]], seeds: Sequence[str], class_index: int | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each group's metric [RESAMPLES] under the same draws of ``seeds`` (and of images, when every run has counts)."""
    seed_draws = rng.integers(0, len(seeds), size=(RESAMPLES, len(seeds)))
    everyone = [group[seed] for group in groups for seed in seeds]
    image_weights = None
    if _with_counts(everyone):
        images = everyone[0].intersection.shape[0]
        image_weights = rng.multinomial(images, np.full(images, 1.0 / images), size=RESAMPLES).astype(np.float64)
    samples = []
    for group in groups:
        if image_weights is None:
            per_seed = np.array([group[seed].value for seed in seeds], dtype=np.float64)[None, :].repeat(RESAMPLES, axis=0)
        else:
            per_seed = np.stack(
                [
                    _metric_of_counts(image_weights @ group[seed].intersection, image_weights @ group[seed].union, class_index)
                    for seed in seeds
                ],
                axis=1,
            )
        drawn = np.take_along_axis(per_seed, seed_draws, axis=1)
        samples.append(np.nanmean(drawn, axis=1) if np.isfinite(drawn).any() else np.full(RESAMPLES, np.nan))
    return samples


def group_interval(results: Mapping[str, SeedResult], class_index: int | None = None) -> tuple[float, float]:
    """The confidence interval of a group's mean metric over its seeds; NaN with nothing to resample (one seed, no counts)."""
    seeds = sorted(results)
    if not seeds or (len(seeds) == 1 and not _with_counts(list(results.values()))):
        return math.nan, math.nan
    (samples,) = _resampled([results], seeds, class_index, np.random.default_rng(BOOTSTRAP_SEED))
    return interval(samples)


@dataclass
class PairedDifference:
    """``group - best`` over the seeds both have: per-seed differences, their mean and its confidence interval."""

    seeds: list[str]
    per_seed: list[float]
    mean: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """worse when the whole interval is below zero, else indistinguishable (the best group is labelled elsewhere)."""
        if math.isnan(self.high):
            return "indistinguishable"
        return "worse" if self.high < 0 else "indistinguishable"


def paired_difference(
    group: Mapping[str, SeedResult], best: Mapping[str, SeedResult], class_index: int | None = None
) -> PairedDifference | None:
    """The paired difference of ``group`` to ``best``; None when they share no seed."""
    seeds = sorted(set(group) & set(best))
    if not seeds:
        return None
    per_seed = [group[seed].value - best[seed].value for seed in seeds]
    finite = [value for value in per_seed if not math.isnan(value)]
    mean = float(np.mean(finite)) if finite else math.nan
    if len(seeds) == 1 and not _with_counts([group[seeds[0]], best[seeds[0]]]):
        return PairedDifference(seeds, per_seed, mean, math.nan, math.nan)
    group_samples, best_samples = _resampled([group, best], seeds, class_index, np.random.default_rng(BOOTSTRAP_SEED))
    low, high = interval(group_samples - best_samples)
    return PairedDifference(seeds, per_seed, mean, low, high)


def seeds_needed(per_seed_differences: Sequence[float], confidence: float = CONFIDENCE) -> int | None:
    """Seeds a rerun needs for a t-interval of the mean paired difference to exclude zero, at the observed mean and
    spread; None when it cannot be estimated (fewer than 2 differences, no spread, or more than MAX_SEEDS_SUGGESTED)."""
    values = np.array([value for value in per_seed_differences if not math.isnan(value)], dtype=np.float64)
    if values.size < 2 or values.std(ddof=1) == 0 or values.mean() == 0:
        return None
    mean, spread = abs(values.mean()), values.std(ddof=1)
    for seeds in range(2, MAX_SEEDS_SUGGESTED + 1):
        if scipy_stats.t.ppf(1 - (1 - confidence) / 2, seeds - 1) * spread / math.sqrt(seeds) < mean:
            return seeds
    return None


def mean_band(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The t confidence band of the mean over rows of ``values`` [seeds, points] (NaN where fewer than 2 values)."""
    count = np.isfinite(values).sum(axis=0)
    mean = np.nanmean(values, axis=0)
    # a point with one seed has no spread: NaN by design, so numpy's warnings about it say nothing
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanstd(values, axis=0, ddof=1) / np.sqrt(count)
        half = np.where(count > 1, scipy_stats.t.ppf(1 - (1 - confidence) / 2, np.maximum(count - 1, 1)) * spread, np.nan)
    return mean - half, mean + half
