"""Per-case results: per_case.csv's rows from the per-image counts, and the report's per_case.png and its numbers."""

import csv
import io
import math

import numpy as np
import pytest

from segsweep.report import build_report
from segsweep.runs.per_case import per_case_text, per_image_miou
from segsweep.sweep.per_case import per_case
from segsweep.sweep.summary import summarize

from .test_report import fake_job
from .test_verdicts import _job


def test_per_case_rows_hand_computed():
    intersection = np.array([[3, 0, 1], [0, 0, 0]])
    union = np.array([[4, 2, 1], [5, 0, 0]])  # image 1: class 0 missed entirely, classes 1 and 2 nowhere
    text = per_case_text(intersection, union, ["a", "b", "c"], hd95=np.array([[1.0, 2.0, 0.0], [9.0, np.nan, np.nan]]))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["image", "mIoU", "mDice", *(f"{m}/{c}" for m in ("iou", "dice", "hd95") for c in "abc")]
    assert float(rows[0]["iou/a"]) == 0.75 and float(rows[0]["dice/a"]) == pytest.approx(6 / 7)
    assert float(rows[0]["mIoU"]) == pytest.approx((0.75 + 0 + 1) / 3)
    assert rows[1]["iou/b"] == "" and rows[1]["hd95/b"] == "" and float(rows[1]["mIoU"]) == 0.0
    assert math.isnan(per_image_miou(np.zeros((1, 2)), np.zeros((1, 2)))[0])


def test_the_report_draws_per_case_from_the_counts_paired_with_the_best_group(tmp_path):
    rng = np.random.default_rng(0)
    images = {"dice": np.clip(0.85 + rng.normal(0, 0.05, (6, 4)), 0, 1), "ce": np.clip(0.6 + rng.normal(0, 0.05, (6, 4)), 0, 1)}
    for seed in (1, 2, 3):
        for loss, iou in images.items():
            shifted = np.clip(iou + 0.01 * seed, 0, 1)
            _job(tmp_path, loss, seed, shifted.tolist(), {"test/mIoU": float(shifted.mean())})
    cases = per_case(summarize(tmp_path))
    assert cases.labels == ["loss=dice", "loss=ce"] and cases.best == ["loss=dice", "loss=dice"]
    # each image's mIoU, the mean over the seeds of the counts' IoU (rounded to 1/100 by the 100-pixel unions)
    expected = {
        loss: np.mean([np.round(np.clip(iou + 0.01 * s, 0, 1) * 100).mean(1) / 100 for s in (1, 2, 3)], 0)
        for loss, iou in images.items()
    }
    np.testing.assert_allclose(cases.miou[0], expected["dice"])
    np.testing.assert_allclose(cases.diff[1], expected["ce"] - expected["dice"])
    assert cases.diff[0] is None
    report = build_report(tmp_path, num_images=0)
    assert report.paths["per_case"] == tmp_path / "per_case.png" and (tmp_path / "per_case.png").stat().st_size > 0


def test_without_per_image_counts_there_is_no_per_case_plot(tmp_path):
    for seed in (1, 2):
        fake_job(tmp_path / f"loss=ce,seed={seed}", ["loss=ce", f"seed={seed}"], 0.5, [0.3, 0.5])
    report = build_report(tmp_path)
    assert per_case(report) is None and "per_case" not in report.paths and not (tmp_path / "per_case.png").exists()
    assert not [note for note in report.notes if "per_case" in note]
