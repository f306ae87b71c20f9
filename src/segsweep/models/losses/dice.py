"""The Dice family: soft Dice, Generalized Dice (Sudre et al. 2017) and the compound Dice + cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.compound import CompoundLoss
from segsweep.models.losses.cross_entropy import CrossEntropyLoss
from segsweep.models.losses.utils import class_mean, prepare_inputs, register_class_weights, soft_counts


class DiceLoss(nn.Module):
    """Soft multiclass Dice loss on softmax probabilities: 1 - mean over classes of Dice.

    Per class, Dice = (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth), summed over the
    pixels of the whole batch (``batch=True``) or of each image (``batch=False``, then averaged
    over images). Ignored pixels are dropped from both p and y. A class absent from the target
    and not predicted scores Dice ~1 through ``smooth``. With ``class_weights`` the class mean is
    sum(w * loss_c) / sum(w); ``include_background=False`` drops class 0 and its weight.
    """

    def __init__(
        self,
        include_background: bool = True,
        smooth: float = 1e-5,
        batch: bool = True,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        register_class_weights(self, class_weights)
        self.include_background = include_background
        self.smooth = smooth
        self.batch = batch
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            counts = soft_counts(logits, safe_target, valid, self.batch)
            intersection, denominator = counts.true_positive, counts.predicted + counts.actual
            if not self.include_background:
                intersection, denominator = intersection[..., 1:], denominator[..., 1:]
                weights = None if weights is None else weights[1:]
            per_class = 1 - (2 * intersection + self.smooth) / (denominator + self.smooth)
            return class_mean(per_class, weights)


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
            logits, _, valid, safe_target = prepare_inputs(logits, target, None, self.ignore_index)
            counts = soft_counts(logits, safe_target, valid, self.batch)
            true_positive, false_positive, false_negative = counts.true_positive, counts.false_positive, counts.false_negative
            # from the target's pixel counts, which carry no gradient (as MONAI): TP + FN is that count too, but
            # differentiable, and the infinite weight of an absent class would make every gradient NaN through it
            weights = torch.reciprocal(counts.actual * counts.actual)
            absent = torch.isinf(weights)
            weights = weights.masked_fill(absent, 0.0)
            weights = weights + absent * weights.amax(dim=-1, keepdim=True)
            numerator = 2 * (true_positive * weights).sum(-1) + self.smooth
            denominator = ((2 * true_positive + false_positive + false_negative) * weights).sum(-1) + self.smooth
            return (1 - numerator / denominator).mean()


class DiceCELoss(CompoundLoss):
    """``dice_weight * DiceLoss + ce_weight * CrossEntropyLoss``, both with the same class weights: the compound loss
    (conf/loss/dice_ce.yaml) under the arguments that checkpoints saved before it name."""

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        smooth: float = 1e-5,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        dice = DiceLoss(
            include_background=include_background, smooth=smooth, class_weights=class_weights, ignore_index=ignore_index
        )
        ce = CrossEntropyLoss(class_weights=class_weights, label_smoothing=label_smoothing, ignore_index=ignore_index)
        super().__init__({"dice": {"weight": dice_weight, "loss": dice}, "ce": {"weight": ce_weight, "loss": ce}})
