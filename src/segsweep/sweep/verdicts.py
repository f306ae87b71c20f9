"""Verdicts within a set of compared groups: every pair tested, Holm-adjusted, so the error is family-wise.

The best group is the one with the highest mean, chosen from the same data that tests it, and with K groups K - 1
comparisons are made against it. Its comparison with the lowest group is the range of the K means, not one test:
so every one of the K(K-1)/2 pairwise paired tests (sweep/intervals.py) enters Holm's step-down procedure, and a group
is `worse` when its comparison with the best is rejected there. Then the chance that any group whose true mean equals
the best one's is called `worse` is at most ``alpha`` for the whole set, whichever group the data made best.
An adaptive design that looks at the results several times spends ``alpha`` over its looks (Bonferroni:
``alpha / looks`` each), so stopping early does not make `worse` easier to get.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from segsweep.sweep.intervals import Estimate, SeedResult, paired_estimate, t_interval

ALPHA = 0.05
MAX_SEEDS_SUGGESTED = 100


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values over the last axis [..., m] (a NaN p, a comparison without an interval, counts as 1)."""
    pvalues = np.where(np.isnan(pvalues), 1.0, np.asarray(pvalues, dtype=np.float64))
    m = pvalues.shape[-1]
    order = np.argsort(pvalues, axis=-1, kind="stable")
    ranked = np.take_along_axis(pvalues, order, axis=-1) * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return adjusted


def pairs(groups: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(groups), 2))


def level(alpha: float = ALPHA, looks: int = 1) -> float:
    """The family-wise level of one look of a design with ``looks`` looks."""
    return alpha / max(int(looks), 1)


def compare_to_best(
    groups: Sequence[dict[str, SeedResult]], class_index: int | None = None, alpha: float = ALPHA, looks: int = 1
) -> list[tuple[Estimate | None, float, str]]:
    """For each group after the first (the best), its paired difference to the best, Holm-adjusted p and verdict.

    Every pair of ``groups`` is tested (over the seeds the two share), the adjustment runs over all of them."""
    index = pairs(len(groups))
    estimates = {pair: paired_estimate(groups[pair[1]], groups[pair[0]], class_index) for pair in index}
    raw = np.array([math.nan if estimates[pair] is None else estimates[pair].p for pair in index])
    adjusted = dict(zip(index, holm(raw))) if index else {}
    threshold = level(alpha, looks)
    results = []
    for other in range(1, len(groups)):
        estimate, p = estimates[(0, other)], adjusted[(0, other)]
        worse = estimate is not None and estimate.mean < 0 and p <= threshold
        results.append((estimate, float(p), "worse" if worse else "indistinguishable"))
    return results


def worse_flags(values: np.ndarray, influence: np.ndarray | None = None, alpha: float = ALPHA, looks: int = 1) -> np.ndarray:
    """The rule of ``compare_to_best`` for many studies at once (simulations): per-seed values [..., groups, seeds]
    (each group on the same seeds) and influences [..., groups, seeds, images] in, `worse` flags [..., groups] out."""
    groups = values.shape[-2]
    index = pairs(groups)
    means = values.mean(axis=-1)
    best = means.argmax(axis=-1)
    raw = np.stack(
        [
            t_interval(
                values[..., b, :] - values[..., a, :],
                None if influence is None else influence[..., b, :, :] - influence[..., a, :, :],
            )["p"]
            for a, b in index
        ],
        axis=-1,
    )
    adjusted = holm(raw)
    flags = np.zeros(means.shape, dtype=bool)
    threshold = level(alpha, looks)
    for column, (a, b) in enumerate(index):
        rejected = adjusted[..., column] <= threshold
        # the pair (best, g) decides g's verdict: g lies below the best and the test rejects
        flags[..., b] |= rejected & (best == a) & (means[..., b] < means[..., a])
        flags[..., a] |= rejected & (best == b) & (means[..., a] < means[..., b])
    return flags


def seeds_needed(estimate: Estimate, comparisons: int, alpha: float = ALPHA, looks: int = 1) -> int | None:
    """Seeds at which a paired difference of the observed mean and spread would be `worse` even at the strictest
    Holm step (``alpha / comparisons``); None when it cannot be estimated or would need more than MAX_SEEDS_SUGGESTED."""
    if estimate is None or estimate.seeds < 2 or not estimate.seed_sd > 0 or estimate.mean == 0:
        return None
    from scipy import stats as scipy_stats  # imported here for the reason in intervals._half_width

    target = level(alpha, looks) / max(comparisons, 1)
    image_var = 0.0 if math.isnan(estimate.image_var) else estimate.image_var
    for seeds in range(estimate.seeds, MAX_SEEDS_SUGGESTED + 1):
        seed_var = estimate.seed_sd**2 / seeds
        df = (seed_var + image_var) ** 2 / (seed_var**2 / (seeds - 1)) if seeds > 1 else 1.0
        if 2 * scipy_stats.t.sf(abs(estimate.mean) / math.sqrt(seed_var + image_var), df) <= target:
            return seeds
    return None
