"""The Hausdorff-distance loss of Karimi & Salcudean 2019 (its distance-transform form, "HD-DT").

``mean((p - q)^2 * (d_p^alpha + d_q^alpha))`` over valid pixels and the scored classes: p the softmax probability of
a class, q its one-hot truth, d_q the distance of each pixel to the truth's boundary and d_p the same of the
prediction (p > 0.5). The prediction's distances change every step, so unlike the boundary loss's maps nothing can be
computed once per image; both are computed without gradient, on the CPU, as in the paper and MONAI's HausdorffDTLoss.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.utils import prepare_inputs


def boundary_distances(masks: Tensor) -> Tensor:
    """float32 maps of boolean masks [B,C,H,W]: each pixel's distance to its mask's boundary (inside and outside);
    all zeros for a mask that is empty or covers the image, whose boundary is not in it."""
    planes = masks.detach().cpu().numpy().reshape(-1, *masks.shape[2:])
    distances = np.zeros(planes.shape, dtype=np.float32)
    for index, plane in enumerate(planes):
        if plane.any() and not plane.all():
            distances[index] = distance_transform_edt(plane) + distance_transform_edt(~plane)
    return torch.from_numpy(distances.reshape(masks.shape)).to(masks.device)


class HausdorffDTLoss(nn.Module):
    """Karimi & Salcudean's HD-DT loss; background left out by default (as MONAI's ``include_background=False``).

    Ignored pixels count in no class's mask and add nothing to the mean.
    """

    def __init__(self, alpha: float = 2.0, include_background: bool = False, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"loss.alpha must be > 0, got {alpha}")
        self.alpha, self.include_background, self.ignore_index = float(alpha), include_background, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, _, valid, safe = prepare_inputs(logits, target, None, self.ignore_index)
            probabilities = logits.softmax(dim=1)
            truth = nn.functional.one_hot(safe, logits.shape[1]).movedim(-1, 1).float() * valid.unsqueeze(1)
            first = 0 if self.include_background else 1
            probabilities, truth = probabilities[:, first:], truth[:, first:]
            distance = boundary_distances(probabilities > 0.5) ** self.alpha + boundary_distances(truth > 0.5) ** self.alpha
            error = (probabilities - truth) ** 2 * distance * valid.unsqueeze(1)
            return error.sum() / (valid.sum() * error.shape[1]).clamp_min(1)
