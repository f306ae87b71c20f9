"""Simulated studies with known true values: per-image counts from a model of how runs err, to calibrate verdicts.

A run's chance of getting a pixel of class c right on image i is ``sigmoid(logit)``, with
``logit = class logit + group shift + image difficulty + group x image + seed effect + training noise + run x image``:
image difficulty is shared by every run, the seed effect by the groups' runs of one seed (same initial weights and
data order), the training noise is each run's own, per class, and so is its run x image noise. Counts follow:
``intersection = q * area``, ``union = (2 - q) * area``. Because areas do not depend on q, a class's population IoU
given a run's effects is ``m / (2 - m)`` with ``m`` the mean of q over images, and the true mean over seeds is a
Gauss-Hermite quadrature over the run effects: no Monte Carlo in the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segsweep.sweep.intervals import metric_and_influence

# background, road, car, pedestrian: the rarest class is the hardest, as in the scenes
CLASS_LOGITS = (3.0, 2.5, 1.5, 0.3)
CLASS_AREAS = (0.55, 0.3, 0.12, 0.03)
RARE_PRESENCE = 0.6  # share of the images in which the rare class occurs
PIXELS = 48 * 48
QUADRATURE_NODES = 60


@dataclass(frozen=True)
class Regime:
    """Standard deviations (on the logit scale) of the noise sources."""

    name: str
    image_sd: float = 0.8
    group_image_sd: float = 0.1
    seed_sd: float = 0.2
    train_sd: float = 0.25
    run_image_sd: float = 0.1


REGIMES = {
    regime.name: regime
    for regime in (
        Regime("training noise dominant"),
        Regime("run x image noise dominant", train_sd=0.01, seed_sd=0.05, run_image_sd=0.9),
        Regime("test-image noise dominant", train_sd=0.02, seed_sd=0.05, group_image_sd=0.6, run_image_sd=0.1),
    )
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_counts(
    regime: Regime, studies: int, seeds: int, shifts: Sequence[float], images: int = 48, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image intersection and union [studies, groups, seeds, images, classes] of ``studies`` independent
    studies; group g's logits are shifted by ``shifts[g]``."""
    rng = np.random.default_rng(seed)
    groups, classes = len(shifts), len(CLASS_LOGITS)
    area = np.asarray(CLASS_AREAS) * PIXELS * rng.lognormal(0.0, 0.5, size=(studies, 1, 1, images, classes))
    area[..., -1] *= rng.random((studies, 1, 1, images)) < RARE_PRESENCE
    logit = (
        np.asarray(CLASS_LOGITS)
        + np.asarray(shifts, dtype=np.float64)[None, :, None, None, None]
        + regime.image_sd * rng.standard_normal((studies, 1, 1, images, classes))
        + regime.group_image_sd * rng.standard_normal((studies, groups, 1, images, classes))
        + regime.seed_sd * rng.standard_normal((studies, 1, seeds, 1, 1))
        + regime.train_sd * rng.standard_normal((studies, groups, seeds, 1, classes))
        + regime.run_image_sd * rng.standard_normal((studies, groups, seeds, images, classes))
    )
    q = _sigmoid(logit)
    return q * area, (2.0 - q) * area


def simulate(
    regime: Regime, studies: int, seeds: int, shifts: Sequence[float], images: int = 48, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed test mIoU [studies, groups, seeds] and per-image influences [studies, groups, seeds, images]."""
    return metric_and_influence(*simulate_counts(regime, studies, seeds, shifts, images, seed))


def true_miou(regime: Regime, shift: float) -> float:
    """The population mean over seeds of a group's dataset-level mIoU (infinitely many test images)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    weights = weights / weights.sum()
    per_image_sd = np.sqrt(regime.image_sd**2 + regime.group_image_sd**2 + regime.run_image_sd**2)
    per_run_sd = np.sqrt(regime.seed_sd**2 + regime.train_sd**2)
    total = 0.0
    for class_logit in CLASS_LOGITS:
        base = class_logit + shift + per_run_sd * nodes[:, None] + per_image_sd * nodes[None, :]
        mean_q = _sigmoid(base) @ weights  # [run nodes]
        total += float((mean_q / (2.0 - mean_q)) @ weights)
    return total / len(CLASS_LOGITS)
