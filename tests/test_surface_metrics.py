"""Dice from the confusion matrix; HD95 and NSD per test image (equal to MONAI's); per_case.csv of a run."""

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from segsweep.models.metrics import confusion_matrix, dice_from_confusion, iou_from_confusion
from segsweep.models.surface_metrics import SurfaceMetrics, image_surface_metrics
from segsweep.runs.image_counts import read_image_counts
from segsweep.runs.per_case import per_image_miou, per_image_scores

from .conftest import run_module

C = 4


def blobs(rng, height, width):
    """A class map of smooth random regions, so masks have real surfaces (and some classes are absent)."""
    return np.argmax(uniform_filter(rng.random((C, height, width)), size=(1, 5, 5)), 0)


def onehot(labels):
    return F.one_hot(torch.as_tensor(labels), C).permute(2, 0, 1)[None].float()


def test_dice_is_two_iou_over_one_plus_iou_from_the_same_confusion_matrix():
    rng = np.random.default_rng(0)
    truth, prediction = torch.as_tensor(blobs(rng, 40, 30)), torch.as_tensor(blobs(rng, 40, 30))
    confusion = confusion_matrix(truth, prediction, C + 1)  # class 4 never occurs: NaN in both
    iou, dice = iou_from_confusion(confusion), dice_from_confusion(confusion)
    torch.testing.assert_close(dice, 2 * iou / (1 + iou), equal_nan=True)
    assert math.isnan(dice[C]) and not dice[:C].isnan().any()


@pytest.mark.parametrize("seed", range(12))
def test_hd95_and_nsd_equal_monai_on_random_masks(seed):
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(seed)
    height, width = rng.integers(8, 64, 2)
    truth = blobs(rng, height, width)
    noisy = np.where(rng.random((height, width)) < 0.1, rng.integers(0, C, (height, width)), truth)
    prediction = blobs(rng, height, width) if seed % 2 else noisy
    tolerance = [0.0, 1.0, 1.5, 2.0, 3.0][seed % 5]
    hd95, nsd = image_surface_metrics(prediction, truth, C, tolerance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns of the classes one mask lacks
        expected_hd95 = compute_hausdorff_distance(onehot(prediction), onehot(truth), include_background=True, percentile=95)
        expected_nsd = compute_surface_dice(onehot(prediction), onehot(truth), [tolerance] * C, include_background=True)
    both = [c for c in range(C) if (truth == c).any() and (prediction == c).any()]
    assert both
    np.testing.assert_allclose(hd95[both], expected_hd95[0, both].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(nsd[both], expected_nsd[0, both].numpy(), rtol=0, atol=1e-4)


def test_absent_missed_and_perfect_classes():
    truth = np.zeros((10, 20), dtype=np.int64)
    truth[2:6, 3:9] = 1  # class 2 is predicted but absent from the truth, class 3 is nowhere
    prediction = truth.copy()
    prediction[8, 15] = 2
    hd95, nsd = image_surface_metrics(prediction, truth, C, tolerance=1.0)
    assert hd95[1] == 0 and nsd[1] == 1  # a perfect mask
    assert math.isnan(hd95[2]) and math.isnan(nsd[2]) and math.isnan(hd95[3])
    missed = image_surface_metrics(np.zeros_like(truth), truth, C, tolerance=1.0)
    assert missed[0][1] == pytest.approx(math.hypot(10, 20)) and missed[1][1] == 0  # the diagonal, no surface matched


def test_a_one_pixel_shift_hand_computed():
    truth = np.zeros((12, 12), dtype=np.int64)
    truth[3:7, 3:7] = 1  # a 4x4 square: its surface is the 12 pixels of its outer ring
    prediction = np.roll(truth, 1, axis=1)
    hd95, nsd = image_surface_metrics(prediction, truth, 2, tolerance=0.0)
    # 6 of each 12-pixel ring lie on the other ring (rows 3 and 6, columns 4..6), the other 6 one pixel off
    assert nsd[1] == pytest.approx(12 / 24) and hd95[1] == pytest.approx(1.0)
    assert image_surface_metrics(prediction, truth, 2, tolerance=1.0)[1][1] == 1


def test_ignored_pixels_belong_to_no_mask_and_a_bad_tolerance_is_one_line():
    truth = np.ones((8, 8), dtype=np.int64)
    truth[:, 4:] = 255
    hd95, nsd = image_surface_metrics(np.ones_like(truth), truth, 2, tolerance=0.0)
    assert hd95[1] == 0 and nsd[1] == 1  # the prediction's part over the ignored half does not count
    with pytest.raises(ValueError, match=r"^module.nsd_tolerance must be >= 0 pixels, got -1"):
        SurfaceMetrics(2, tolerance=-1)


def test_a_run_with_surface_metrics_logs_means_over_the_images_with_the_class_and_writes_per_case(tmp_path):
    run_module("segsweep.train", "debug=fast", "module.surface_metrics=true", f"hydra.run.dir={tmp_path}")
    test = json.loads((tmp_path / "metrics.json").read_text())["test"]
    with open(tmp_path / "per_case.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    counts = read_image_counts(tmp_path)
    assert len(rows) == counts["intersection"].shape[0] == 8
    iou, dice = per_image_scores(counts["intersection"], counts["union"])
    np.testing.assert_allclose([float(row["mIoU"]) for row in rows], per_image_miou(counts["intersection"], counts["union"]))
    for c, name in enumerate(counts["classes"]):
        cells = {
            metric: np.array([float(row[f"{metric}/{name}"] or "nan") for row in rows]) for metric in ("dice", "hd95", "nsd")
        }
        np.testing.assert_allclose(cells["dice"], dice[:, c])
        for metric in ("hd95", "nsd"):
            assert test[f"test/{metric}/{name}"] == pytest.approx(np.nanmean(cells[metric]), rel=1e-6)
    assert "test/mDice" in test and "test/dice/car" in test
