"""The Hausdorff-distance loss of Karimi & Salcudean 2019 (its distance-transform form, "HD-DT").

``mean((p - q)^2 * (d_p^alpha + d_q^alpha))`` over valid pixels and the scored classes: p the softmax probability of
a class, q its one-hot truth, d_q the distance of each pixel to the truth's boundary and d_p the same of the
prediction (p > 0.5). Both are computed without gradient, on the CPU, as in the paper and MONAI's HausdorffDTLoss; the
truth's are a function of its mask alone and computed once per mask (``distance_cache.MaskMapCache``), the
prediction's change every step.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.distance_cache import MaskMapCache
from segsweep.models.losses.utils import prepare_inputs


def plane_distances(planes: np.ndarray) -> np.ndarray:
    """float32 maps of boolean planes [N,H,W]: each pixel's distance to its plane's boundary (inside and outside); all
    zeros for a plane that is empty or full, whose boundary is not in the image."""
    distances = np.zeros(planes.shape, dtype=np.float32)
    for index, plane in enumerate(planes):
        if plane.any() and not plane.all():
            distances[index] = distance_transform_edt(plane) + distance_transform_edt(~plane)
    return distances


def boundary_distances(masks: Tensor) -> Tensor:
    """``plane_distances`` of boolean masks [B,C,H,W], as float32 [B,C,H,W] on their device."""
    planes = masks.detach().cpu().numpy().reshape(-1, *masks.shape[2:])
    return torch.from_numpy(plane_distances(planes).reshape(masks.shape)).to(masks.device)


def truth_distances(label: np.ndarray, classes: range) -> np.ndarray:
    """``plane_distances`` of the masks of ``classes`` in one label image [H,W] (ignored pixels in none of them)."""
    return plane_distances(label[None] == np.asarray(classes)[:, None, None])


class HausdorffDTLoss(nn.Module):
    """Karimi & Salcudean's HD-DT loss; background left out by default (as MONAI's ``include_background=False``).

    Ignored pixels count in no class's mask and add nothing to the mean. The truth's distances of up to ``cache_mb``
    MiB of masks are kept after their first use (0: none kept).
    """

    def __init__(
        self, alpha: float = 2.0, include_background: bool = False, ignore_index: int = IGNORE_INDEX, cache_mb: float = 1536.0
    ) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"loss.alpha must be > 0, got {alpha}")
        self.alpha, self.include_background, self.ignore_index = float(alpha), include_background, ignore_index
        self.truth_distances = MaskMapCache(truth_distances, cache_mb)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, _, valid, safe = prepare_inputs(logits, target, None, self.ignore_index)
            probabilities = logits.softmax(dim=1)
            truth = nn.functional.one_hot(safe, logits.shape[1]).movedim(-1, 1).float() * valid.unsqueeze(1)
            first = 0 if self.include_background else 1
            probabilities, truth = probabilities[:, first:], truth[:, first:]
            truth_distance = self.truth_distances(target, classes=range(first, logits.shape[1]))
            distance = boundary_distances(probabilities > 0.5) ** self.alpha + truth_distance**self.alpha
            error = (probabilities - truth) ** 2 * distance * valid.unsqueeze(1)
            return error.sum() / (valid.sum() * error.shape[1]).clamp_min(1)
