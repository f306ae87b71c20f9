"""The verdicts' calibration table: the report's rule beside the percentile bootstrap it replaced, on simulated studies.

Usage: python scripts/verdict_calibration.py [--studies 400]

For each noise regime of segsweep.sweep.simulation and 3, 5 and 10 seeds: the coverage of a group's 95% interval and
of a paired difference's, and how often a study of five equal groups calls any of them `worse` (nominal: 0.05);
then, for one group 0.04 below four equal ones (about the README's dice vs weighted CE), how often it is found.
The old rule is kept here, not in the package: a (seed, image) percentile bootstrap, `worse` when the whole interval
of the difference to the best group is below 0. tests/test_verdicts.py shows with it that the calibration tests fail
for it. Prints a markdown table (docs/verdicts.md holds one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from segsweep.sweep.intervals import metric_and_influence, t_interval
from segsweep.sweep.simulation import REGIMES, Regime, simulate_counts, true_miou
from segsweep.sweep.verdicts import worse_flags

GROUPS = 5
SEED_COUNTS = (3, 5, 10)
RESAMPLES = 400
# a README-sized difference: one group's logits 0.25 lower gives a true mIoU difference of about -0.04
README_REGIME = Regime("README-like", train_sd=0.08, seed_sd=0.1)
README_SHIFT = -0.25


def percentile_bootstrap(intersection: np.ndarray, union: np.ndarray, seed: int = 0) -> np.ndarray:
    """The old rule's resamples: each group's mean mIoU [studies, groups, RESAMPLES] under shared draws of seeds
    (with replacement) and of test images (multinomial weights), from counts [studies, groups, seeds, images, classes]."""
    rng = np.random.default_rng(seed)
    studies, _, seeds, images, _ = intersection.shape
    weights = rng.multinomial(images, np.full(images, 1.0 / images), size=(studies, RESAMPLES)).astype(np.float64)
    draws = rng.integers(0, seeds, size=(studies, RESAMPLES, seeds))
    i = np.einsum("nbi,nksic->nksbc", weights, intersection)
    u = np.einsum("nbi,nksic->nksbc", weights, union)
    per_run = np.nanmean(np.where(u > 0, i / np.maximum(u, 1e-12), np.nan), axis=-1)  # [n, k, s, b]
    picked = np.take_along_axis(per_run, draws.transpose(0, 2, 1)[:, None, :, :], axis=2)  # [n, k, s, b]
    return picked.mean(axis=2)


def old_rule(intersection: np.ndarray, union: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group intervals [studies, groups, 2], the first pair's interval [studies, 2] and `worse` flags [studies, groups]."""
    samples = percentile_bootstrap(intersection, union)
    values, _ = metric_and_influence(intersection, union)
    means = values.mean(axis=-1)
    best = means.argmax(axis=-1)
    group_ci = np.stack(np.percentile(samples, [2.5, 97.5], axis=-1), axis=-1)
    pair_ci = np.stack(np.percentile(samples[:, 1] - samples[:, 0], [2.5, 97.5], axis=-1), axis=-1)
    to_best = samples - np.take_along_axis(samples, best[:, None, None], axis=1)
    high = np.percentile(to_best, 97.5, axis=-1)
    worse = (high < 0) & (np.arange(GROUPS)[None, :] != best[:, None])
    return group_ci, pair_ci, worse


def new_rule(intersection: np.ndarray, union: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The report's rule, in the same shapes as ``old_rule``."""
    values, influence = metric_and_influence(intersection, union)
    group = t_interval(values[:, 0], influence[:, 0])
    pair = t_interval(values[:, 1] - values[:, 0], influence[:, 1] - influence[:, 0], separate=True)
    group_ci = np.stack([group["low"], group["high"]], axis=-1)[:, None, :]
    return group_ci, np.stack([pair["low"], pair["high"]], axis=-1), worse_flags(values, influence)


def calibration_rows(studies: int) -> list[dict[str, object]]:
    """One row per (regime, seeds, rule) with coverage and error rates, and one power row per seed count."""
    rows = []
    for regime in REGIMES.values():
        truth = true_miou(regime, 0.0)
        for seeds in SEED_COUNTS:
            counts = simulate_counts(regime, studies, seeds, [0.0] * GROUPS, seed=seeds)
            for name, rule in (("old: percentile bootstrap", old_rule), ("new: t + shared images, Holm", new_rule)):
                group_ci, pair_ci, worse = rule(*counts)
                rows.append(
                    {
                        "scenario": regime.name,
                        "seeds": seeds,
                        "rule": name,
                        "group 95% CI coverage": float(((group_ci[:, 0, 0] <= truth) & (truth <= group_ci[:, 0, 1])).mean()),
                        "paired 95% CI coverage": float(((pair_ci[:, 0] <= 0) & (pair_ci[:, 1] >= 0)).mean()),
                        "equal groups called worse": float(worse.any(axis=-1).mean()),
                    }
                )
    for seeds in SEED_COUNTS:
        counts = simulate_counts(README_REGIME, studies, seeds, [0.0] * (GROUPS - 1) + [README_SHIFT], seed=100 + seeds)
        for name, rule in (("old: percentile bootstrap", old_rule), ("new: t + shared images, Holm", new_rule)):
            *_, worse = rule(*counts)
            rows.append(
                {"scenario": "README-sized difference (-0.04)", "seeds": seeds, "rule": name, "found": float(worse[:, -1].mean())}
            )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    columns = [
        "scenario",
        "seeds",
        "rule",
        "group 95% CI coverage",
        "paired 95% CI coverage",
        "equal groups called worse",
        "found",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400, help="simulated studies per row (Monte-Carlo error ~0.011)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(markdown(calibration_rows(args.studies)))
    print(f"\n{args.studies} studies per row, {GROUPS} groups, 48 test images; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
