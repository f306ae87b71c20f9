"""Tversky loss (Salehi et al. 2017) and its focal form (Abraham & Khan 2019): Dice with unequal costs of FP and FN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses import _prepare, _register_class_weights


def soft_counts(logits: Tensor, safe_target: Tensor, valid: Tensor, batch: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft true-positive, false-positive and false-negative counts per class ([C], or [B, C] when not ``batch``)
    of the softmax probabilities against the one-hot target, over the valid pixels."""
    mask = valid.unsqueeze(1)
    probs = logits.softmax(dim=1) * mask
    onehot = F.one_hot(safe_target, logits.shape[1]).movedim(-1, 1).to(probs.dtype) * mask
    spatial = tuple(range(2, logits.ndim))
    dims = (0, *spatial) if batch else spatial
    true_positive = (probs * onehot).sum(dims)
    return true_positive, probs.sum(dims) - true_positive, onehot.sum(dims) - true_positive


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
        _register_class_weights(self, class_weights)
        self.alpha, self.beta, self.gamma, self.smooth, self.batch = alpha, beta, gamma, smooth, batch
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = _prepare(logits, target, self.class_weights, self.ignore_index)
            true_positive, false_positive, false_negative = soft_counts(logits, safe_target, valid, self.batch)
            index = (true_positive + self.smooth) / (
                true_positive + self.alpha * false_positive + self.beta * false_negative + self.smooth
            )
            per_class = 1 - index
            if self.gamma != 1:
                # d/dx x^(1/gamma) is infinite at 0 for gamma > 1: a perfect class gets value 0 and gradient 0
                powered = per_class.clamp_min(torch.finfo(per_class.dtype).eps) ** (1 / self.gamma)
                per_class = torch.where(per_class > 0, powered, torch.zeros_like(powered))
            if weights is None:
                return per_class.mean()
            return ((per_class * weights).sum(-1) / weights.sum()).mean()
