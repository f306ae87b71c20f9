"""Per-case views of a sweep: each group's per-test-image mIoU and its paired per-image difference to the best group.

From the per-image counts every job keeps (test_image_counts.npz): an image's mIoU is its own classes' mean IoU,
averaged over the group's seeds (the test images are the same for every seed of a stratum); the difference pairs
each image with the same image under the best group of its stratum, as the report's verdicts compare them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segsweep.runs.image_counts import read_image_counts
from segsweep.runs.per_case import per_image_miou, row_mean
from segsweep.sweep.groups import Group, Report, strata
from segsweep.sweep.search import shown_label


@dataclass
class PerCase:
    """Per group (best first within each stratum): its label, per-image mIoU [images], and the paired difference to
    its stratum's best group [images] (None for a best group, or when the images do not pair)."""

    labels: list[str]
    miou: list[np.ndarray]
    diff: list[np.ndarray | None]
    best: list[str]


def group_image_miou(group: Group) -> np.ndarray | None:
    """The per-image mIoU of a group's finished seeds, averaged over them; None without counts or on unequal test sets."""
    values = []
    for job in group.finished:
        counts = read_image_counts(job.path)
        if counts is not None:
            values.append(per_image_miou(counts["intersection"], counts["union"]))
    if not values or len({value.shape for value in values}) != 1 or values[0].size == 0:
        return None
    return row_mean(np.stack(values, axis=1))  # [images, seeds]: an image with no class in any seed stays NaN


def per_case(report: Report) -> PerCase | None:
    """The per-case view of every scored group with counts; None when no group has any."""
    cases = PerCase([], [], [], [])
    for groups in strata(report).values():
        best_values = group_image_miou(groups[0])
        for group in groups:
            values = best_values if group is groups[0] else group_image_miou(group)
            if values is None:
                continue
            paired = group is not groups[0] and best_values is not None and best_values.shape == values.shape
            cases.labels.append(shown_label(group))
            cases.miou.append(values)
            cases.diff.append(values - best_values if paired else None)
            cases.best.append(shown_label(groups[0]))
    return cases if cases.labels else None
