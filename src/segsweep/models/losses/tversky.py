"""Tversky loss (Salehi et al. 2017) and its focal form (Abraham & Khan 2019): Dice with unequal costs of FP and FN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.utils import class_mean, prepare_inputs, register_class_weights, soft_counts


class TverskyLoss(nn.Module):
    """1 - Tversky index per class, TI = (TP + s) / (TP + alpha FP + beta FN + s), then the class mean (weighted when
    given). beta > alpha costs a missed pixel more than a false alarm, which favours recall of rare classes
    (Salehi et al. use alpha 0.3, beta 0.7); alpha = beta = 0.5 is Dice. With ``gamma`` != 1 it is the focal Tversky
    loss, (1 - TI)^(1/gamma) per class (Abraham & Khan use gamma 4/3). Equals MONAI's
    ``TverskyLoss(softmax=True, to_onehot_y=True, batch=True)`` for gamma 1 and no class weights (tested).
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        smooth: float = 1e-5,
        batch: bool = True,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"loss.alpha and loss.beta must be >= 0, got {alpha} and {beta}")
        if gamma <= 0:
            raise ValueError(f"loss.gamma must be > 0, got {gamma}")
        register_class_weights(self, class_weights)
        self.alpha, self.beta, self.gamma, self.smooth, self.batch = alpha, beta, gamma, smooth, batch
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            counts = soft_counts(logits, safe_target, valid, self.batch)
            index = (counts.true_positive + self.smooth) / (
                counts.true_positive + self.alpha * counts.false_positive + self.beta * counts.false_negative + self.smooth
            )
            per_class = 1 - index
            if self.gamma != 1:
                # d/dx x^(1/gamma) is infinite at 0 for gamma > 1: a perfect class gets value 0 and gradient 0
                powered = per_class.clamp_min(torch.finfo(per_class.dtype).eps) ** (1 / self.gamma)
                per_class = torch.where(per_class > 0, powered, torch.zeros_like(powered))
            return class_mean(per_class, weights)
