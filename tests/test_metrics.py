import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from segsweep.models.metrics import BoundaryF1


def square_scene(top: int = 2, left: int = 2, side: int = 4, size: int = 10, label: int = 1) -> torch.Tensor:
    """[1,H,W] background-0 image with one filled square of `label`."""
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, top : top + side, left : left + side] = label
    return mask


def bf1(preds, target, **kwargs) -> torch.Tensor:
    metric = BoundaryF1(**{"num_classes": 2, **kwargs})
    metric.update(preds, target)
    return metric.compute()


def random_scenes(batch: int, seed: int, num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random label maps (8x8 cells upsampled) and a noisy prediction of them."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (batch, 1, 6, 6), generator=gen)
    target = torch.nn.functional.interpolate(coarse.float(), scale_factor=8).long()[:, 0]
    preds = target.clone()
    flip = torch.rand(target.shape, generator=gen) < 0.05
    preds[flip] = torch.randint(0, num_classes, (int(flip.sum()),), generator=gen)
    return preds, target


def test_perfect_prediction_scores_one():
    target = square_scene()
    assert bf1(target, target).item() == 1.0


def test_shift_by_one_pixel_hand_computed():
    target = square_scene(left=2)
    shifted = square_scene(left=3)
    # Square rings (12 px) overlap in 6 px: rows 2 and 5 at columns 3..5. Background rings
    # (20 px, just outside the squares) overlap in 10 px: rows 1 and 6 at columns 2..6.
    # So both classes have precision = recall = 1/2 at tolerance 0.
    exact = bf1(shifted, target, tolerance=0, average="none")
    assert torch.allclose(exact, torch.tensor([0.5, 0.5]))
    assert bf1(shifted, target, tolerance=0).item() == pytest.approx(0.5)
    assert bf1(shifted, target, tolerance=1).item() == 1.0
    assert bf1(shifted, target, tolerance=3).item() == 1.0


def test_precision_and_recall_counted_separately():
    target = square_scene(side=4)
    bigger = square_scene(side=5)
    metric = BoundaryF1(num_classes=2, tolerance=0)
    metric.update(bigger, target)
    # Predicted ring of the 5x5 square has 16 px; it shares rows/cols 2 (7 px) with the 4x4 ring (12 px).
    assert metric.matched_pred[1].item() == 7 and metric.total_pred[1].item() == 16
    assert metric.matched_gt[1].item() == 7 and metric.total_gt[1].item() == 12
    precision, recall = 7 / 16, 7 / 12
    expected = 2 * precision * recall / (precision + recall)
    assert metric.compute_per_class()[1].item() == pytest.approx(expected)


def test_empty_prediction_scores_zero_for_missing_class():
    target = square_scene()
    empty = torch.zeros_like(target)
    per_class = bf1(empty, target, average="none")
    assert per_class[1].item() == 0.0
    # Uniform prediction has no boundary at all, so background scores 0 too.
    assert bf1(empty, target).item() == 0.0


def test_class_absent_everywhere_is_left_out_of_the_average():
    target = square_scene()
    metric = BoundaryF1(num_classes=4)
    metric.update(target, target)
    per_class = metric.compute_per_class()
    assert torch.isnan(per_class[2:]).all()
    assert metric.compute().item() == 1.0


def test_no_boundary_anywhere_is_nan():
    flat = torch.zeros(1, 8, 8, dtype=torch.long)
    assert math.isnan(bf1(flat, flat).item())


def test_image_border_is_not_a_boundary():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[:, :, 3:] = 1  # two halves touching the image border
    metric = BoundaryF1(num_classes=2, tolerance=0)
    metric.update(target, target)
    # Only the two columns next to the class edge are boundary, 6 px each.
    assert metric.total_gt.tolist() == [6, 6]


def test_logits_input_equals_label_input():
    preds, target = random_scenes(batch=2, seed=0)
    logits = torch.nn.functional.one_hot(preds, 3).permute(0, 3, 1, 2).float() * 5 + torch.rand(2, 3, 48, 48)
    from_logits = bf1(logits, target, num_classes=3)
    from_labels = bf1(preds, target, num_classes=3)
    assert from_logits.item() == from_labels.item() < 1.0


def test_logits_with_wrong_channel_count_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        bf1(torch.rand(1, 3, 10, 10), square_scene())


def test_two_updates_equal_one_concatenated_update():
    preds_a, target_a = random_scenes(batch=2, seed=1)
    preds_b, target_b = random_scenes(batch=3, seed=2)
    split = BoundaryF1(num_classes=3)
    split.update(preds_a, target_a)
    split.update(preds_b, target_b)
    joint = BoundaryF1(num_classes=3)
    joint.update(torch.cat([preds_a, preds_b]), torch.cat([target_a, target_b]))
    assert torch.equal(split.compute_per_class(), joint.compute_per_class())
    assert split.compute().item() == joint.compute().item()


def test_dataset_level_sums_differ_from_mean_of_per_batch_scores():
    # Guards against averaging per-update scores: one easy and one hard batch of different size.
    target = square_scene()
    hard = BoundaryF1(num_classes=2, tolerance=0)
    hard.update(square_scene(left=3), target)
    both = BoundaryF1(num_classes=2, tolerance=0)
    both.update(target.repeat(3, 1, 1), target.repeat(3, 1, 1))
    both.update(square_scene(left=3), target)
    assert both.compute().item() == pytest.approx(0.875)  # per class (3*12+6)/(4*12) = 7/8, same for background
    assert both.compute().item() != pytest.approx((1.0 + hard.compute().item()) / 2)


def test_ignored_pixels_create_and_count_no_boundaries():
    target = square_scene()
    target[:, 6:10, 6:10] = 255
    preds = square_scene()
    preds[:, 7:9, 7:9] = 1  # spurious object entirely inside the ignored region
    assert bf1(preds, target).item() == 1.0
    # Without ignore_index the void block and the spurious square are scored.
    assert bf1(preds, target, ignore_index=None).item() < 1.0


def test_ignore_region_edge_is_not_a_boundary():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 255
    preds = torch.zeros_like(target)
    metric = BoundaryF1(num_classes=2)
    metric.update(preds, target)
    assert metric.total_gt.sum().item() == 0 and metric.total_pred.sum().item() == 0


def test_states_reduce_by_sum():
    metric = BoundaryF1(num_classes=3)
    assert set(metric._reductions) == {"matched_pred", "total_pred", "matched_gt", "total_gt"}
    assert all(fn is dim_zero_sum for fn in metric._reductions.values())


def test_merging_rank_states_equals_single_process():
    preds, target = random_scenes(batch=4, seed=3)
    single = BoundaryF1(num_classes=3)
    single.update(preds, target)
    rank0, rank1 = BoundaryF1(num_classes=3), BoundaryF1(num_classes=3)
    rank0.update(preds[:1], target[:1])
    rank1.update(preds[1:], target[1:])
    rank0.merge_state(rank1)
    assert torch.equal(rank0.compute_per_class(), single.compute_per_class())
    assert rank0.compute().item() == single.compute().item()


def test_reset_clears_counts():
    metric = BoundaryF1(num_classes=2)
    metric.update(square_scene(), square_scene())
    metric.reset()
    assert metric.total_gt.sum().item() == 0


def test_invalid_arguments_rejected():
    with pytest.raises(ValueError):
        BoundaryF1(num_classes=2, tolerance=-1)
    with pytest.raises(ValueError):
        BoundaryF1(num_classes=2, average="micro")
