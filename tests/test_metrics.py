import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.ndimage import binary_erosion, distance_transform_cdt, distance_transform_edt
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex
from torchmetrics.utilities.data import dim_zero_sum

from segsweep.data.classes import IGNORE_INDEX, DatasetClasses
from segsweep.models.metrics import BoundaryF1, confusion_matrix, iou_from_confusion, mean_iou, pixel_accuracy
from segsweep.models.module import stage_metrics

from .helpers.commands import REPO_ROOT

REDUCTIONS = ("per_image", "pooled")
STATES = {"pooled": {"matched_pred", "total_pred", "matched_gt", "total_gt"}, "per_image": {"f1_sum", "images"}}


def square_scene(top: int = 2, left: int = 2, side: int = 4, size: int = 10, label: int = 1) -> torch.Tensor:
    """[1,H,W] background-0 image with one filled square of `label`."""
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, top : top + side, left : left + side] = label
    return mask


def bf1(preds, target, **kwargs) -> torch.Tensor:
    metric = BoundaryF1(**{"num_classes": 2, **kwargs})
    metric.update(preds, target)
    return metric.compute()


def random_scenes(batch: int, seed: int, num_classes: int = 3, ignore: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random label maps (8x8 cells upsampled) and a noisy prediction of them; optionally a void block."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (batch, 1, 6, 6), generator=gen)
    target = torch.nn.functional.interpolate(coarse.float(), scale_factor=8).long()[:, 0]
    preds = target.clone()
    flip = torch.rand(target.shape, generator=gen) < 0.05
    preds[flip] = torch.randint(0, num_classes, (int(flip.sum()),), generator=gen)
    if ignore:
        target[:, 10:30, 20:36] = IGNORE_INDEX
    return preds, target


# --- an independent BF score: scipy boundaries and distance transforms, per image and class, in float64 ---


def reference_boundary(mask: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Class pixels with an 8-neighbour outside the class; void pixels and the image border count as inside."""
    inside = binary_erosion(mask | neutral, structure=np.ones((3, 3), bool), border_value=1)
    return mask & ~neutral & ~inside


def matched(boundary: np.ndarray, other: np.ndarray, tolerance: int, chebyshev: bool) -> int:
    """Pixels of `boundary` within `tolerance` of a pixel of `other` (Euclidean distance, or the old Chebyshev one)."""
    if not other.any():
        return 0
    distance = distance_transform_cdt(~other, metric="chessboard") if chebyshev else distance_transform_edt(~other)
    return int((boundary & (distance <= tolerance)).sum())


def reference_counts(preds, target, num_classes: int, tolerance: int, chebyshev: bool = False) -> np.ndarray:
    """[B,C,4]: matched and total predicted, matched and total true boundary pixels per image and class."""
    counts = np.zeros((len(target), num_classes, 4), dtype=np.int64)
    for i, (pred, truth) in enumerate(zip(preds.numpy(), target.numpy())):
        neutral = truth == IGNORE_INDEX
        for c in range(num_classes):
            pb, gb = reference_boundary(pred == c, neutral), reference_boundary(truth == c, neutral)
            counts[i, c] = matched(pb, gb, tolerance, chebyshev), pb.sum(), matched(gb, pb, tolerance, chebyshev), gb.sum()
    return counts


def reference_f1(matched_pred: int, total_pred: int, matched_gt: int, total_gt: int) -> float:
    precision = matched_pred / total_pred if total_pred else 0.0
    recall = matched_gt / total_gt if total_gt else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def reference_bf(preds, target, num_classes: int, tolerance: int, reduction: str = "per_image", **kw) -> torch.Tensor:
    """Per-class BF score [C]: mean F1 over the images with a boundary of the class (pooled: of summed counts)."""
    counts = reference_counts(preds, target, num_classes, tolerance, **kw)
    if reduction == "pooled":
        counts = counts.sum(0, keepdims=True)
    per_class = []
    for c in range(num_classes):
        scores = [reference_f1(*image[c]) for image in counts if image[c][1] + image[c][3] > 0]
        per_class.append(float(np.mean(scores)) if scores else math.nan)
    return torch.tensor(per_class, dtype=torch.float64)


CASES = {
    "blocks0": random_scenes(batch=3, seed=0),
    "blocks1": random_scenes(batch=3, seed=1),
    "blocks_void": random_scenes(batch=3, seed=2, ignore=True),
    # independent random labels per pixel: boundaries everywhere
    "noise0": tuple(torch.randint(0, 3, (2, 2, 24, 24), generator=torch.Generator().manual_seed(0))),
    "noise1": tuple(torch.randint(0, 3, (2, 2, 24, 24), generator=torch.Generator().manual_seed(1))),
    "diagonal_shift_2px": (square_scene(6, 6, 6, 16), square_scene(4, 4, 6, 16)),
    "sideways_shift_2px": (square_scene(4, 6, 6, 16), square_scene(4, 4, 6, 16)),
    "too_big": (square_scene(3, 3, 9, 16), square_scene(4, 4, 6, 16)),
    "empty_prediction": (torch.zeros(1, 16, 16, dtype=torch.long), square_scene(4, 4, 6, 16)),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tolerance", [0, 1, 2, 3])
@pytest.mark.parametrize("case", CASES)
def test_matches_the_distance_transform_reference(case: str, tolerance: int, reduction: str) -> None:
    preds, target = CASES[case]
    metric = BoundaryF1(3, tolerance=tolerance, reduction=reduction, average="none")
    metric.update(preds, target)
    expected = reference_bf(preds, target, 3, tolerance, reduction)
    torch.testing.assert_close(metric.compute().double(), expected, rtol=0, atol=1e-6, equal_nan=True)


def test_a_diagonal_shift_is_scored_by_euclidean_not_chebyshev_distance() -> None:
    target, shifted = square_scene(4, 4, 6, 16), square_scene(6, 6, 6, 16)
    euclidean = reference_bf(shifted, target, 2, 2).nanmean().item()
    # every pixel of the shifted ring has its twin 2 px away in Chebyshev distance, so the old definition gave 1
    chebyshev = reference_bf(shifted, target, 2, 2, chebyshev=True).nanmean().item()
    assert chebyshev == 1.0
    assert euclidean < 0.9
    assert bf1(shifted, target, tolerance=2).item() == pytest.approx(euclidean, abs=1e-6)


def test_per_image_weighs_images_equally_and_pooled_weighs_boundary_pixels() -> None:
    # a big square predicted right and a small one 3 px off: pooled is dominated by the long boundary
    target = torch.cat([square_scene(2, 2, 16, 24), square_scene(10, 10, 3, 24)])
    preds = torch.cat([square_scene(2, 2, 16, 24), square_scene(10, 13, 3, 24)])
    per_image = bf1(preds, target, tolerance=1, average="none")
    pooled = bf1(preds, target, tolerance=1, average="none", reduction="pooled")
    assert per_image[1].item() == pytest.approx(reference_bf(preds, target, 2, 1)[1].item(), abs=1e-6)
    assert pooled[1].item() == pytest.approx(reference_bf(preds, target, 2, 1, "pooled")[1].item(), abs=1e-6)
    assert pooled[1].item() > per_image[1].item() + 0.2


def test_per_image_edge_cases() -> None:
    square, empty = square_scene(), torch.zeros(1, 10, 10, dtype=torch.long)
    metric = BoundaryF1(num_classes=2, average="none")
    metric.update(square, square)  # both classes matched: F1 1
    metric.update(square, empty)  # boundaries only in the prediction: F1 0 for both classes
    metric.update(empty, square)  # boundaries only in the truth: F1 0 for both classes
    metric.update(empty, empty)  # no boundary on either side: this image does not count
    assert metric.images.tolist() == [3, 3]
    assert metric.compute().tolist() == pytest.approx([1 / 3, 1 / 3], abs=1e-7)
    metric.reset()
    assert metric.images.sum().item() == 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_shift_by_one_pixel_hand_computed(reduction: str) -> None:
    target = square_scene(left=2)
    shifted = square_scene(left=3)
    # Square rings (12 px) overlap in 6 px: rows 2 and 5 at columns 3..5. Background rings
    # (20 px, just outside the squares) overlap in 10 px: rows 1 and 6 at columns 2..6.
    # So both classes have precision = recall = 1/2 at tolerance 0.
    exact = bf1(shifted, target, tolerance=0, average="none", reduction=reduction)
    assert exact.tolist() == [0.5, 0.5]
    assert bf1(shifted, target, tolerance=1, reduction=reduction).item() == 1.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_tolerance_is_inclusive_at_the_exact_euclidean_distance(reduction: str) -> None:
    """A boundary pixel at distance exactly `tolerance` is matched: one-pixel regions 5 px apart (a 3-4-5 offset)."""
    target, preds = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    target[0, 4, 4], preds[0, 7, 8] = 1, 1
    assert bf1(preds, target, tolerance=5, average="none", reduction=reduction)[1].item() == 1.0
    assert bf1(preds, target, tolerance=4, average="none", reduction=reduction)[1].item() == 0.0


def test_precision_and_recall_counted_separately():
    target = square_scene(side=4)
    bigger = square_scene(side=5)
    metric = BoundaryF1(num_classes=2, tolerance=0, reduction="pooled")
    metric.update(bigger, target)
    # Predicted ring of the 5x5 square has 16 px; it shares rows/cols 2 (7 px) with the 4x4 ring (12 px).
    assert [metric.matched_pred[1].item(), metric.total_pred[1].item()] == [7, 16]
    assert [metric.matched_gt[1].item(), metric.total_gt[1].item()] == [7, 12]
    precision, recall = 7 / 16, 7 / 12
    expected = 2 * precision * recall / (precision + recall)
    assert metric.compute_per_class()[1].item() == pytest.approx(expected)
    assert bf1(bigger, target, tolerance=0, average="none")[1].item() == pytest.approx(expected)


def test_class_absent_everywhere_is_left_out_of_the_average_and_no_class_gives_nan():
    target = square_scene()
    metric = BoundaryF1(num_classes=4)
    metric.update(target, target)
    assert torch.isnan(metric.compute_per_class()[2:]).all()
    assert metric.compute().item() == 1.0
    flat = torch.zeros(1, 8, 8, dtype=torch.long)
    assert math.isnan(bf1(flat, flat).item())  # no class has a boundary: undefined


def test_neither_the_image_border_nor_a_void_edge_is_a_boundary():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[:, :, 3:] = 1  # two halves touching the image border
    metric = BoundaryF1(num_classes=2, tolerance=0, reduction="pooled")
    metric.update(target, target)
    # Only the two columns next to the class edge are boundary, 6 px each.
    assert metric.total_gt.tolist() == [6, 6]
    target[:, :, 3:] = 255
    per_image = BoundaryF1(num_classes=2)
    per_image.update(torch.zeros_like(target), target)
    assert per_image.images.sum().item() == 0


def test_logits_input_equals_label_input():
    preds, target = random_scenes(batch=2, seed=0)
    logits = torch.nn.functional.one_hot(preds, 3).permute(0, 3, 1, 2).float() * 5 + torch.rand(2, 3, 48, 48)
    from_logits = bf1(logits, target, num_classes=3)
    assert from_logits.item() == bf1(preds, target, num_classes=3).item()


def test_logits_with_wrong_channel_count_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        bf1(torch.rand(1, 3, 10, 10), square_scene())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignored_pixels_create_and_count_no_boundaries(reduction: str) -> None:
    target = square_scene()
    target[:, 6:10, 6:10] = 255
    preds = square_scene()
    preds[:, 7:9, 7:9] = 1  # spurious object entirely inside the ignored region
    assert bf1(preds, target, reduction=reduction).item() == 1.0
    # Without ignore_index the void block and the spurious square are scored.
    assert bf1(preds, target, ignore_index=None, reduction=reduction).item() < 1.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_states_are_sums_so_split_updates_and_merged_ranks_equal_one_update(reduction: str) -> None:
    preds, target = random_scenes(batch=4, seed=3)
    single, split, rank0, rank1 = (BoundaryF1(num_classes=3, reduction=reduction) for _ in range(4))
    assert set(single._reductions) == STATES[reduction]
    assert all(fn is dim_zero_sum for fn in single._reductions.values())
    single.update(preds, target)
    split.update(preds[:1], target[:1])
    split.update(preds[1:], target[1:])
    rank0.update(preds[:1], target[:1])
    rank1.update(preds[1:], target[1:])
    rank0.merge_state(rank1)  # what the DDP sync does
    # counts are exact; per-image F1 sums are float32, added in another order
    atol = 0.0 if reduction == "pooled" else 1e-6
    torch.testing.assert_close(split.compute_per_class(), single.compute_per_class(), rtol=0, atol=atol)
    torch.testing.assert_close(rank0.compute_per_class(), single.compute_per_class(), rtol=0, atol=atol)


@pytest.mark.parametrize("kwargs", [{"tolerance": -1}, {"average": "micro"}, {"reduction": "mean"}, {"num_classes": 0}])
def test_invalid_arguments_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BoundaryF1(**{"num_classes": 2, **kwargs})


def test_training_config_and_module_use_the_per_image_score() -> None:
    assert OmegaConf.load(REPO_ROOT / "conf" / "train.yaml").module.boundary_reduction == "per_image"
    classes = DatasetClasses.from_dict({"names": ["a", "b"], "ignore_index": IGNORE_INDEX})
    assert stage_metrics(classes, 2)["boundary_f1"].reduction == "per_image"
    assert stage_metrics(classes, 2, "pooled")["boundary_f1"].reduction == "pooled"


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilate_matches_euclidean_distance_transform(radius: int) -> None:
    """The boundary tolerance is Euclidean: a pixel is covered iff its EDT distance to the mask is <= radius."""
    from segsweep.models.metrics import _dilate

    masks = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(radius)) > 0.97
    expected = torch.stack(
        [torch.stack([torch.from_numpy(distance_transform_edt(~m.numpy()) <= radius) for m in image]) for image in masks]
    )
    assert torch.equal(_dilate(masks, radius), expected)


# --- IoU and pixel accuracy against torchmetrics ---

NUM_CLASSES = 6  # 0-2 everywhere, 3 only predicted, 4 only true, 5 nowhere


def label_maps(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(truth, prediction) [3,20,20] with a void band in the truth."""
    gen = torch.Generator().manual_seed(seed)
    truth, prediction = torch.randint(0, 3, (2, 3, 20, 20), generator=gen)
    prediction[0, :2] = 3
    truth[1, :2] = 4
    truth[:, -3:] = IGNORE_INDEX
    return truth, prediction


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_iou_and_pixel_accuracy_are_bit_equal_to_torchmetrics(seed: int) -> None:
    truth, prediction = label_maps(seed)
    confusion = confusion_matrix(truth, prediction, NUM_CLASSES)
    jaccard = MulticlassJaccardIndex(NUM_CLASSES, average="none", ignore_index=IGNORE_INDEX)(prediction, truth)
    accuracy = MulticlassAccuracy(NUM_CLASSES, average="micro", ignore_index=IGNORE_INDEX)(prediction, truth)
    assert torch.equal(confusion, MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX)(prediction, truth))
    assert confusion.sum().item() == (truth != IGNORE_INDEX).sum().item()
    assert torch.equal(iou_from_confusion(confusion)[:5], jaccard[:5])  # the classes whose union is not empty
    assert mean_iou(confusion).item() == jaccard[:5].mean().item()  # class 5 (NaN) left out
    assert pixel_accuracy(confusion).item() == accuracy.item()
    assert iou_from_confusion(confusion)[3:5].tolist() == [0.0, 0.0]  # only predicted, only true
    assert math.isnan(iou_from_confusion(confusion)[5].item())  # in neither


def test_mean_iou_of_no_class_is_nan() -> None:
    assert math.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.long)).item())
