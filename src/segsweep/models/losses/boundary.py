"""The boundary loss of Kervadec et al. 2019: a region loss plus probabilities times the truth's signed distances.

The boundary term's weight grows by a step per epoch, the paper's schedule (``BoundaryLoss``). The maps are a
function of each truth mask alone: computed once per mask and kept (``distance_cache.MaskMapCache``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.compound import build_loss
from segsweep.models.losses.distance_cache import MaskMapCache
from segsweep.models.losses.utils import prepare_inputs


def signed_distance_map(label: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 [C,H,W] maps of one label image [H,W], as the paper's code (``one_hot2dist``): outside a class's mask
    the Euclidean distance to it, inside minus the distance to the outside plus one (0 on the mask's own border
    pixels); all zeros for a class absent from the image. Ignored pixels are outside every mask."""
    maps = np.zeros((num_classes, *label.shape), dtype=np.float32)
    for index in range(num_classes):
        inside = label == index
        if inside.any():
            outside = ~inside
            maps[index] = distance_transform_edt(outside) * outside - (distance_transform_edt(inside) - 1) * inside
    return maps


def signed_distance_maps(target: Tensor, num_classes: int) -> Tensor:
    """float32 [B,C,H,W] maps (``signed_distance_map``) of a target [B,H,W], computed anew (no cache)."""
    maps = [signed_distance_map(label, num_classes) for label in target.cpu().numpy()]
    return torch.from_numpy(np.stack(maps)).to(target.device)


class SurfaceLoss(nn.Module):
    """Kervadec et al.'s boundary term: the mean over valid pixels and the scored classes of softmax(p)_c * phi_c, phi
    the signed distance map of class c (negative inside). Background is left out by default, as in the paper.

    The maps of up to ``cache_mb`` MiB of masks are kept after their first use (``loss.cache_mb``; 0: none kept).
    """

    def __init__(self, include_background: bool = False, ignore_index: int = IGNORE_INDEX, cache_mb: float = 1536.0) -> None:
        super().__init__()
        self.include_background, self.ignore_index = include_background, ignore_index
        self.distance_maps = MaskMapCache(signed_distance_map, cache_mb)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, _, valid, _ = prepare_inputs(logits, target, None, self.ignore_index)
            distances = self.distance_maps(target, num_classes=logits.shape[1])
            weighted = logits.softmax(dim=1) * distances * valid.unsqueeze(1)
            if not self.include_background:
                weighted = weighted[:, 1:]
            return weighted.sum() / (valid.sum() * weighted.shape[1]).clamp_min(1)


class BoundaryLoss(nn.Module):
    """``alpha * region + (1 - alpha) * SurfaceLoss``, alpha = max(min_region_weight, 1 - region_step * epoch): the
    paper's rebalancing (alpha from 1, 0.01 less per epoch; region = Generalized Dice there, conf/loss/boundary.yaml).

    The module sets the epoch (``set_epoch``) at the start of every training epoch, from the trainer, so a resumed run
    continues the schedule. ``region`` is a loss config (or module) built with this loss's ignore index and, where it
    takes them, ``class_weights``.
    """

    def __init__(
        self,
        region: Mapping[str, Any] | nn.Module,
        region_step: float = 0.01,
        min_region_weight: float = 0.01,
        include_background: bool = False,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        cache_mb: float = 1536.0,
    ) -> None:
        super().__init__()
        if not (region_step >= 0 and 0 <= min_region_weight <= 1):
            raise ValueError(
                f"loss.region_step={region_step}, loss.min_region_weight={min_region_weight}: expected a step >= 0 "
                "and a minimum weight in [0, 1]"
            )
        self.region = build_loss("loss.region", region, class_weights, ignore_index)
        self.surface = SurfaceLoss(include_background=include_background, ignore_index=ignore_index, cache_mb=cache_mb)
        self.region_step, self.min_region_weight = region_step, min_region_weight
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def region_weight(self) -> float:
        return max(self.min_region_weight, 1.0 - self.region_step * self.epoch)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        alpha = self.region_weight
        return alpha * self.region(logits, target) + (1 - alpha) * self.surface(logits, target)
