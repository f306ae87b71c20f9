"""Generalized Dice loss (Sudre et al. 2017): Dice pooled over classes, each weighted by 1 / (its pixel count)^2."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses import _prepare
from segsweep.models.tversky import soft_counts


class GeneralizedDiceLoss(nn.Module):
    """1 - 2 sum_c w_c TP_c / sum_c w_c (sum p_c + sum y_c), with w_c = 1 / (sum y_c)^2 from the batch's own target
    (``batch=True``) or each image's. A class absent from the target would get an infinite weight; it gets the largest
    finite weight instead, as in MONAI. The weights are the loss's own, so ``class_weights`` are not taken.
    Equals MONAI's ``GeneralizedDiceLoss(softmax=True, to_onehot_y=True)`` (tested).
    """

    def __init__(self, smooth: float = 1e-5, batch: bool = True, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.smooth, self.batch, self.ignore_index = smooth, batch, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, _, valid, safe_target = _prepare(logits, target, None, self.ignore_index)
            true_positive, false_positive, false_negative = soft_counts(logits, safe_target, valid, self.batch)
            truth = true_positive + false_negative
            weights = torch.reciprocal(truth * truth)
            absent = torch.isinf(weights)
            weights = weights.masked_fill(absent, 0.0)
            weights = weights + absent * weights.amax(dim=-1, keepdim=True)
            numerator = 2 * (true_positive * weights).sum(-1) + self.smooth
            denominator = ((2 * true_positive + false_positive + false_negative) * weights).sum(-1) + self.smooth
            return (1 - numerator / denominator).mean()
