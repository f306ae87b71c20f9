"""Segmentation metrics: IoU and pixel accuracy from one confusion matrix, and boundary F1 (missing from torchmetrics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from segsweep.data.classes import IGNORE_INDEX


def iou_from_confusion(confusion: Tensor) -> Tensor:
    """Per-class IoU [C] of a [true, predicted] confusion matrix: TP / (TP + FP + FN).

    A class absent from both truth and prediction has no IoU: NaN, left out of the mean (``mean_iou``).
    This is the one convention of training, eval, predict and the report."""
    confusion = confusion.float()
    true_positives = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    return torch.where(union != 0, true_positives / union, torch.full_like(union, float("nan")))


def mean_iou(confusion: Tensor) -> Tensor:
    """mIoU over the classes present in truth or prediction (NaN if none is)."""
    return iou_from_confusion(confusion).nanmean()


def pixel_accuracy(confusion: Tensor) -> Tensor:
    """Share of the scored pixels whose class is right."""
    return confusion.diag().sum().float() / confusion.sum().float()


def confusion_matrix(truth: Tensor, prediction: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """int64 [true, predicted] pixel counts of label maps of any shape; ``ignore_index`` pixels are left out."""
    return multiclass_confusion_matrix(prediction, truth, num_classes, ignore_index=ignore_index, validate_args=False)


def _boundaries(masks: Tensor, neutral: Tensor) -> Tensor:
    """Boundary pixels of per-class binary masks [B,C,H,W] (bool) under 8-connectivity.

    A pixel is on the boundary if it belongs to the class and one of its 8 neighbours does not.
    `neutral` [B,1,H,W] marks pixels that count as belonging to every class, so ignored regions
    behave like the image border and never create boundaries; they are never boundary pixels either.
    """
    filled = (masks | neutral).float()
    # Erosion as a min-pool; max_pool2d pads with -inf, so pixels outside the image never erode.
    eroded = -F.max_pool2d(-filled, kernel_size=3, stride=1, padding=1)
    return masks & ~neutral & (eroded < 0.5)


def _dilate(masks: Tensor, radius: int) -> Tensor:
    """Grow bool masks [B,C,H,W] by `radius` pixels in Chebyshev distance."""
    if radius == 0:
        return masks
    return F.max_pool2d(masks.float(), kernel_size=2 * radius + 1, stride=1, padding=radius) > 0.5


class BoundaryF1(Metric):
    """Boundary F1 score (BF score, Csurka et al. 2013), accumulated over the whole dataset.

    For every class, a predicted boundary pixel is a true positive if a ground-truth boundary pixel
    of the same class lies within `tolerance` pixels (Chebyshev distance), and vice versa for recall.
    Matched and total counts are summed over all images (and ranks) before precision, recall and F1
    are formed, then F1 is macro-averaged over the classes with a boundary in the ground truth or the
    prediction. With ``average="none"`` the per-class F1 is returned, NaN for classes without any
    boundary. If no class has a boundary at all the macro average is NaN (the score is undefined).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    matched_pred: Tensor
    total_pred: Tensor
    matched_gt: Tensor
    total_gt: Tensor

    def __init__(
        self,
        num_classes: int,
        tolerance: int = 2,
        ignore_index: int | None = IGNORE_INDEX,
        average: str = "macro",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if average not in ("macro", "none"):
            raise ValueError(f"average must be 'macro' or 'none', got {average!r}")
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        self.average = average
        for name in ("matched_pred", "total_pred", "matched_gt", "total_gt"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

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

        self.matched_pred += (pred_b & _dilate(gt_b, self.tolerance)).sum(dim=(0, 2, 3))
        self.total_pred += pred_b.sum(dim=(0, 2, 3))
        self.matched_gt += (gt_b & _dilate(pred_b, self.tolerance)).sum(dim=(0, 2, 3))
        self.total_gt += gt_b.sum(dim=(0, 2, 3))

    def compute_per_class(self) -> Tensor:
        """Per-class boundary F1 [C]; NaN for classes with no boundary in prediction or ground truth."""
        precision = self.matched_pred / self.total_pred.clamp(min=1)
        recall = self.matched_gt / self.total_gt.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=torch.finfo(precision.dtype).tiny)
        present = (self.total_pred + self.total_gt) > 0
        return torch.where(present, f1, torch.full_like(f1, float("nan")))

    def compute(self) -> Tensor:
        per_class = self.compute_per_class()
        if self.average == "none":
            return per_class
        return per_class.nanmean()
