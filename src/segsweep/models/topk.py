"""Top-k cross-entropy: the mean loss of the hardest k% of pixels (nnU-Net's TopKLoss; online hard example mining)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses import _prepare, _register_class_weights


class TopKCrossEntropyLoss(nn.Module):
    """Per-pixel (class-weighted) cross-entropy, averaged over the ``k`` percent of valid pixels with the largest loss
    in the batch (nnU-Net's default k is 10). Easy background pixels then stop dominating the gradient, whatever their
    number. k = 100 is the plain mean of the per-pixel (weighted) losses.
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
        _register_class_weights(self, class_weights)
        self.k, self.ignore_index = k, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = _prepare(logits, target, self.class_weights, self.ignore_index)
            per_pixel = F.cross_entropy(logits, safe_target, weight=weights, reduction="none")[valid]
            if per_pixel.numel() == 0:
                return logits.sum() * 0.0
            count = max(1, int(per_pixel.numel() * self.k / 100))
            return per_pixel.topk(count, sorted=False).values.mean()
