"""Softmax focal loss (Lin et al. 2017) with a per-class alpha: cross-entropy that down-weights confident pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.utils import prepare_inputs, register_class_weights, weighted_mean


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t per pixel.

    ``class_weights`` is the per-class alpha. The mean is normalised like ``F.cross_entropy``:
    by the summed alpha_t of the valid pixels, so gamma=0 gives exactly the (weighted) cross-entropy.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"loss.gamma: must be >= 0, got {gamma}")
        register_class_weights(self, class_weights)
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            log_p_t = logits.log_softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
            per_pixel = -log_p_t
            if self.gamma != 0:
                # 1 - p_t as -expm1(log p_t): exact for confident pixels, where 1 - exp() cancels to 0.
                # Clamped: d/dx x^gamma is infinite at x=0 for gamma<1, which would make NaN gradients.
                one_minus_p = (-torch.expm1(log_p_t)).clamp_min(torch.finfo(log_p_t.dtype).tiny)
                per_pixel = per_pixel * one_minus_p**self.gamma
            if weights is not None:
                per_pixel = per_pixel * weights[safe_target]
            per_pixel = torch.where(valid, per_pixel, 0.0)
            return weighted_mean(per_pixel, valid, safe_target, weights)
