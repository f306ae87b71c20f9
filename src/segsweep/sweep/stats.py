"""Statistics over the seeds of a group: mean and sample std, convergence epochs and images, the convergence threshold."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from segsweep.sweep.jobs import Job

THRESHOLD_FRACTION = 0.9


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the non-NaN values; std is NaN for a single value."""
    values = [float(value) for value in values if value is not None and not math.isnan(float(value))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _first_reaching(history: Sequence[dict[str, Any]], threshold: float, metric: str) -> tuple[int, dict[str, Any]] | None:
    """(position, entry) of the first epoch's entry whose ``metric`` reached ``threshold``; None if none did."""
    for position, entry in enumerate(sorted(history, key=lambda entry: entry.get("epoch", 0))):
        value = entry.get(metric)
        if value is not None and not math.isnan(value) and value >= threshold:
            return position, entry
    return None


def convergence_epoch(history: Sequence[dict[str, Any]], threshold: float, metric: str = "val/mIoU") -> int | None:
    """The epoch, counted from 1, at whose end ``metric`` first reached ``threshold``; None if it never did."""
    reached = _first_reaching(history, threshold, metric)
    if reached is None:
        return None
    position, entry = reached
    return int(entry["epoch"]) if "epoch" in entry else position + 1


def convergence_images(history: Sequence[dict[str, Any]], threshold: float, metric: str = "val/mIoU") -> int | None:
    """The training images seen (a sampler's repeats counted) when ``metric`` first reached ``threshold``; None if it
    never did, or the run recorded no ``images_seen`` (runs from before they were counted)."""
    reached = _first_reaching(history, threshold, metric)
    return None if reached is None or "images_seen" not in reached[1] else int(reached[1]["images_seen"])


def default_threshold(jobs: Sequence[Job], fraction: float = THRESHOLD_FRACTION) -> tuple[float, str]:
    """``fraction`` x the best val mIoU any job reached (failed ones too), and a note saying so."""
    best, best_job = -math.inf, None
    for job in jobs:
        for entry in job.history:
            value = entry.get("val/mIoU")
            if value is not None and not math.isnan(value) and value > best:
                best, best_job = value, job.name
    if best_job is None:
        return math.nan, "no job has a val mIoU history"
    return fraction * best, f"{fraction:g} x the best val mIoU of the sweep ({best:.4f}, job {best_job})"


def nan_to(value: float, default: float) -> float:
    return default if math.isnan(value) else value
