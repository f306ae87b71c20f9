"""Segmentation metrics: IoU, Dice and pixel accuracy from one confusion matrix, and boundary F1 (missing from torchmetrics)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from segsweep.data.classes import IGNORE_INDEX


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class IoU [C] of a [true, predicted] confusion matrix: TP / (TP + FP + FN).

    A class absent from both truth and prediction has no IoU: NaN, left out of the mean (``mean_iou``).
    This is the one convention of training, eval, predict and the report."""
    confusion = confusion.float()
    true_positives = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    return torch.where(union != 0, true_positives / union, torch.full_like(union, float("nan")))


def dice_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class Dice [C] of a [true, predicted] confusion matrix: 2 TP / (2 TP + FP + FN) = 2 IoU / (1 + IoU).

    Dataset-level like IoU (the counts of the whole set, not a mean over images); NaN where IoU is."""
    confusion = confusion.float()
    true_positives = confusion.diag()
    total = confusion.sum(0) + confusion.sum(1)
    return torch.where(total != 0, 2 * true_positives / total, torch.full_like(total, float("nan")))


def mean_iou(confusion: Tensor) -> Tensor:
    """mIoU over the classes present in truth or prediction (NaN if none is)."""
    return iou_from_confusion(confusion).nanmean()


def pixel_accuracy(confusion: Tensor) -> Tensor:
    """Share of the scored pixels whose class is right."""
    return confusion.diag().sum().float() / confusion.sum().float()


def confusion_matrix(truth: Tensor, prediction: Tensor, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> Tensor:
    """int64 [true, predicted] pixel counts of label maps of any shape; ``ignore_index`` pixels are left out.

    Equal to torchmetrics' ``multiclass_confusion_matrix``, without its host synchronisations (it drops the ignored
    pixels by boolean indexing and sizes its bincount from the data): the ignored pixels go to one extra bin, and
    the counts are a scatter-add into a tensor of known size, so a GPU step never waits for the host."""
    truth, prediction = truth.reshape(-1).long(), prediction.reshape(-1).long()
    bins = num_classes * num_classes
    cell = truth * num_classes + prediction
    if ignore_index is not None:
        cell = torch.where(truth == ignore_index, bins, cell)
    counts = torch.zeros(bins + 1, dtype=torch.long, device=cell.device).scatter_add_(0, cell, torch.ones_like(cell))
    return counts[:bins].view(num_classes, num_classes)


class ConfusionMatrix(Metric):
    """The dataset-level [true, predicted] pixel counts of a split (``confusion_matrix`` summed over batches; summed
    across DDP ranks), as torchmetrics' ``MulticlassConfusionMatrix`` but free of host synchronisations."""

    is_differentiable = False
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.confmat += confusion_matrix(target, preds, self.num_classes, self.ignore_index)

    def compute(self) -> Tensor:
        return self.confmat


def _boundaries(masks: Tensor, neutral: Tensor) -> Tensor:
    """Boundary pixels of per-class binary masks [B,C,H,W] (bool) under 8-connectivity.

    A pixel is on the boundary if it belongs to the class and one of its 8 neighbours does not.
    `neutral` [B,1,H,W] marks pixels that count as belonging to every class, so ignored regions
    behave like the image border and never create boundaries; they are never boundary pixels either.
    """
    # Erosion over the 3x3 square (the disk of radius 1 plus its corners: all 8 neighbours); outside never erodes.
    filled = masks | neutral
    height, width = filled.shape[-2:]
    padded = F.pad(filled, (1, 1, 1, 1), value=True)
    rows = padded[..., :, :width] & padded[..., :, 1 : width + 1] & padded[..., :, 2:]
    eroded = rows[..., :height, :] & rows[..., 1 : height + 1, :] & rows[..., 2:, :]
    return masks & ~neutral & ~eroded


def _dilate(masks: Tensor, radius: int) -> Tensor:
    """Grow bool masks [B,C,H,W] by `radius` pixels in Euclidean distance (the BF score's tolerance).

    A disk (not a square) so diagonal offsets count at their true length. Exact boolean shifts: each row grown by
    every half-width, then one shifted row per vertical offset; a convolution over float copies gives the same
    pixels at several times the cost (it dominated validation)."""
    if radius == 0:
        return masks
    height, width = masks.shape[-2:]
    padded = F.pad(masks, (radius, radius, radius, radius), value=False)
    # grown[w]: the padded rows grown by w pixels left and right (central columns only)
    grown = [padded[..., radius : radius + width]]
    for w in range(1, radius + 1):
        grown.append(grown[-1] | padded[..., radius - w : radius - w + width] | padded[..., radius + w : radius + w + width])
    result = torch.zeros_like(masks)
    for dy in range(-radius, radius + 1):
        result |= grown[math.isqrt(radius * radius - dy * dy)][..., radius + dy : radius + dy + height, :]
    return result


def _f1(matched_pred: Tensor, total_pred: Tensor, matched_gt: Tensor, total_gt: Tensor) -> Tensor:
    """F1 of boundary match counts (any shape), 0 where precision + recall is 0 (one side has no boundary, or no match)."""
    precision = matched_pred / total_pred.clamp(min=1)
    recall = matched_gt / total_gt.clamp(min=1)
    return 2 * precision * recall / (precision + recall).clamp(min=torch.finfo(precision.dtype).tiny)


class BoundaryF1(Metric):
    """Boundary F1 score (BF score: Csurka et al., BMVC 2013; MATLAB ``bfscore``; the DAVIS boundary measure).

    For every class, a predicted boundary pixel is matched if a ground-truth boundary pixel of the same class lies
    at a Euclidean distance <= `tolerance` pixels (inclusive: at tolerance 2, offsets (2, 0) and (1, 1) match, (2, 1)
    at 2.24 px does not; tolerance 0 is an exact match), and vice versa for recall; F1 = 2PR / (P + R).

    ``reduction="per_image"`` (the published score): P, R and F1 per image and class; a class's score is the mean
    of its per-image F1 over the images where it is defined. Edge cases, per image and class: a boundary in only
    one of prediction and truth -> F1 0 (as the DAVIS measure); boundaries in both but no match -> F1 0; no
    boundary in either -> undefined, the image does not count for that class (DAVIS would score it 1, which
    would reward a class for being absent).
    ``reduction="pooled"``: matched and total counts are summed over all images before P, R and F1 are formed,
    so long boundaries weigh more; a class is undefined if it has no boundary anywhere.

    ``average="macro"`` (default) averages the defined classes; ``average="none"`` returns the per-class F1 [C],
    NaN where undefined. With no class defined the macro average is NaN. All states are sums, so they reduce
    across DDP ranks by summing.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    # pooled: per-class boundary pixel counts; per_image: per-class sums of per-image F1 and the images summed
    matched_pred: Tensor
    total_pred: Tensor
    matched_gt: Tensor
    total_gt: Tensor
    f1_sum: Tensor
    images: Tensor

    def __init__(
        self,
        num_classes: int,
        tolerance: int = 2,
        ignore_index: int | None = IGNORE_INDEX,
        average: str = "macro",
        reduction: Literal["per_image", "pooled"] = "per_image",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if average not in ("macro", "none"):
            raise ValueError(f"average must be 'macro' or 'none', got {average!r}")
        if reduction not in ("per_image", "pooled"):
            raise ValueError(f"reduction must be 'per_image' or 'pooled', got {reduction!r}")
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        self.average = average
        self.reduction = reduction
        if reduction == "pooled":
            for name in ("matched_pred", "total_pred", "matched_gt", "total_gt"):
                self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        else:
            # float32 (torch's default), not float64: MPS has no float64, and the metric moves with the module.
            self.add_state("f1_sum", default=torch.zeros(num_classes), dist_reduce_fx="sum")
            self.add_state("images", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate boundary matches; `preds` is logits/probs [B,C,H,W] or labels [B,H,W]."""
        if preds.ndim == 4:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"preds has {preds.shape[1]} channels, expected num_classes={self.num_classes}")
            preds = preds.argmax(dim=1)
        if preds.ndim != 3 or preds.shape != target.shape:
            raise ValueError(f"expected preds [B,H,W] (or [B,C,H,W]) and target [B,H,W], got {preds.shape}, {target.shape}")

        classes = torch.arange(self.num_classes, device=target.device).view(1, -1, 1, 1)
        if self.ignore_index is None:
            neutral = torch.zeros_like(target, dtype=torch.bool).unsqueeze(1)
        else:
            neutral = (target == self.ignore_index).unsqueeze(1)
        # Comparing against the class ids (instead of one_hot) tolerates out-of-range labels such as 255.
        pred_b = _boundaries(preds.unsqueeze(1) == classes, neutral)
        gt_b = _boundaries(target.unsqueeze(1) == classes, neutral)

        # [B,C] counts per image and class
        matched_pred = (pred_b & _dilate(gt_b, self.tolerance)).sum(dim=(2, 3))
        total_pred = pred_b.sum(dim=(2, 3))
        matched_gt = (gt_b & _dilate(pred_b, self.tolerance)).sum(dim=(2, 3))
        total_gt = gt_b.sum(dim=(2, 3))
        if self.reduction == "pooled":
            self.matched_pred += matched_pred.sum(0)
            self.total_pred += total_pred.sum(0)
            self.matched_gt += matched_gt.sum(0)
            self.total_gt += total_gt.sum(0)
            return
        defined = (total_pred + total_gt) > 0
        f1 = _f1(matched_pred, total_pred, matched_gt, total_gt)
        self.f1_sum += torch.where(defined, f1, torch.zeros_like(f1)).sum(0)
        self.images += defined.sum(0)

    def compute_per_class(self) -> Tensor:
        """Per-class boundary F1 [C]; NaN for classes where it is undefined (see the class docstring)."""
        if self.reduction == "pooled":
            f1 = _f1(self.matched_pred, self.total_pred, self.matched_gt, self.total_gt)
            defined = (self.total_pred + self.total_gt) > 0
        else:
            f1 = self.f1_sum / self.images.clamp(min=1)
            defined = self.images > 0
        return torch.where(defined, f1, torch.full_like(f1, float("nan")))

    def compute(self) -> Tensor:
        """The macro average over defined classes (``average="macro"``) or the per-class F1 (``average="none"``)."""
        per_class = self.compute_per_class()
        if self.average == "none":
            return per_class
        return per_class.nanmean()
