"""The imbalance study's view of a sweep: each strategy's rare-class IoU and mIoU against the rare class's pixel share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class RarityPoint:
    """One (strategy, rarity level) group: the rare class's share of training pixels and the group's test results."""

    level: str
    pixel_share: float
    rare_iou: float
    rare_ci: tuple[float, float]
    miou: float
    miou_ci: tuple[float, float]
    seeds: int


def pixel_share(jobs: Iterable[Any], class_name: str) -> float:
    """Mean over the jobs of the class's share of the training pixels, as each run recorded it."""
    shares = []
    for job in jobs:
        classes = job.classes or {}
        names, pixels = classes.get("names", []), classes.get("train_pixels", [])
        if class_name in names and len(pixels) == len(names) and sum(pixels) > 0:
            shares.append(pixels[names.index(class_name)] / sum(pixels))
    return sum(shares) / len(shares) if shares else math.nan


def rarity_curves(groups: Sequence[Any], stratum_key: str, rare_class: str) -> dict[str, list[RarityPoint]]:
    """Per strategy (the group's other swept values), its points from the commonest to the rarest level."""
    curves: dict[str, list[RarityPoint]] = {}
    for group in groups:
        if not group.finished or math.isnan(group.mean("test/mIoU")):
            continue
        strategy = ",".join(f"{key}={value}" for key, value in group.params.items() if key != stratum_key) or "all"
        curves.setdefault(strategy, []).append(
            RarityPoint(
                level=group.params.get(stratum_key, ""),
                pixel_share=pixel_share(group.finished, rare_class),
                rare_iou=group.mean(f"test/iou/{rare_class}"),
                rare_ci=group.rare_ci,
                miou=group.mean("test/mIoU"),
                miou_ci=group.miou_ci,
                seeds=len(group.finished),
            )
        )
    for points in curves.values():
        points.sort(key=lambda point: -point.pixel_share if not math.isnan(point.pixel_share) else math.inf)
    return curves


def degrades_least(curves: Mapping[str, Sequence[RarityPoint]]) -> tuple[str, float, float] | None:
    """The strategy whose rare-class IoU drops least from its commonest to its rarest level:
    (strategy, IoU at the commonest level, IoU at the rarest); None without two levels to compare."""
    drops = {
        strategy: (points[0].rare_iou, points[-1].rare_iou)
        for strategy, points in curves.items()
        if len(points) > 1 and not math.isnan(points[0].rare_iou) and not math.isnan(points[-1].rare_iou)
    }
    if not drops:
        return None
    strategy = min(drops, key=lambda name: (drops[name][0] - drops[name][1], -drops[name][1]))
    return strategy, *drops[strategy]
