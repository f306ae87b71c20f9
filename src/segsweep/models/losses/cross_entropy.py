"""Pixel-wise cross-entropy (plain or class-weighted) and top-k cross-entropy, the mean loss of the hardest k% of pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.utils import prepare_inputs, register_class_weights, weighted_mean


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, averaged over non-ignored pixels weighted by their class weight."""

    def __init__(
        self,
        class_weights: Tensor | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        register_class_weights(self, class_weights)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            per_pixel = F.cross_entropy(
                logits,
                target,
                weight=weights,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction="none",
            )
            return weighted_mean(per_pixel, valid, safe_target, weights)


class TopKCrossEntropyLoss(nn.Module):
    """Per-pixel (class-weighted) cross-entropy, averaged over the ``k`` percent of valid pixels with the largest loss
    in the batch (nnU-Net's TopKLoss; online hard example mining; nnU-Net's default k is 10). Easy background pixels
    then stop dominating the gradient, whatever their number. k = 100 is the plain mean of the per-pixel (weighted)
    losses of the valid pixels.

    The one difference from nnU-Net: there the count is k% of *all* pixels, ignored ones included, and an ignored
    pixel enters the ranking with loss 0, so when fewer valid pixels than that count exist the mean is diluted by
    zeros. Here the count is max(1, floor(k% of the valid pixels)) and ignored pixels never enter the ranking or the
    mean, so the loss does not depend on how much of the batch is ignored; without ignored pixels the two are equal.
    As in nnU-Net, class weights scale each pixel's loss and the mean is a plain mean over the kept pixels (not
    normalised by their weights, unlike ``F.cross_entropy``'s mean). A batch with every pixel ignored gives 0.
    """

    def __init__(
        self,
        k: float = 10.0,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not 0 < k <= 100:
            raise ValueError(f"loss.k must be in (0, 100] (a percentage of the pixels), got {k}")
        register_class_weights(self, class_weights)
        self.k, self.ignore_index = k, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            per_pixel = F.cross_entropy(logits, safe_target, weight=weights, reduction="none")[valid]
            if per_pixel.numel() == 0:
                return logits.sum() * 0.0
            count = max(1, int(per_pixel.numel() * self.k / 100))
            return per_pixel.topk(count, sorted=False).values.mean()
