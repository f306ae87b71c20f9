"""per_case.csv beside metrics.json: every test image's IoU and Dice per class (and HD95, NSD when computed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsweep.runs.files import csv_text, write_text_atomic

PER_CASE_FILE = "per_case.csv"


def per_image_scores(intersection: np.ndarray, union: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image IoU and Dice [images, C] of the per-image counts: I / U and 2 I / (I + U), NaN where U is 0."""
    intersection, union = intersection.astype(np.float64), union.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
        dice = np.where(union > 0, 2 * intersection / (intersection + union), np.nan)
    return iou, dice


def row_mean(values: np.ndarray) -> np.ndarray:
    """The mean of each row of a 2-D array (per image over its classes, say), NaN left out (NaN for a row of NaN)."""
    present = ~np.isnan(values)
    return np.where(present.any(1), np.nansum(values, 1) / np.maximum(present.sum(1), 1), np.nan)


def per_image_miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Each image's mIoU [images]: the mean IoU over the classes in its truth or prediction (NaN if none)."""
    return row_mean(per_image_scores(intersection, union)[0])


def per_case_text(
    intersection: np.ndarray,
    union: np.ndarray,
    class_names: Sequence[str],
    hd95: np.ndarray | None = None,
    nsd: np.ndarray | None = None,
) -> str:
    """The CSV: a row per image in test-loader order (``image``: its index), mIoU, mDice, then per-class columns."""
    iou, dice = per_image_scores(intersection, union)
    columns = {"iou": iou, "dice": dice, **({} if hd95 is None else {"hd95": hd95}), **({} if nsd is None else {"nsd": nsd})}
    miou, mdice = row_mean(iou), row_mean(dice)
    rows = []
    for index in range(iou.shape[0]):
        row: dict[str, object] = {"image": index, "mIoU": float(miou[index]), "mDice": float(mdice[index])}
        for metric, values in columns.items():
            row.update({f"{metric}/{name}": float(values[index, c]) for c, name in enumerate(class_names)})
        rows.append(row)
    return csv_text(rows) if rows else "image,mIoU,mDice\n"


def write_per_case(
    run_dir: str | Path, intersection: np.ndarray, union: np.ndarray, class_names: Sequence[str], **surface: np.ndarray | None
) -> Path:
    """per_case.csv into ``run_dir``; ``surface``: the ``hd95`` and ``nsd`` arrays [images, C] when computed."""
    return write_text_atomic(Path(run_dir) / PER_CASE_FILE, per_case_text(intersection, union, class_names, **surface))
