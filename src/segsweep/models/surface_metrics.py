"""Per-image surface metrics: HD95 and the normalised surface distance (NSD) of every class, equal to MONAI's.

The surface of a mask is its pixels with a 4-neighbour outside it (scipy's binary erosion; outside the image counts
as outside the mask), as in MONAI's ``get_mask_edges``; distances are Euclidean, in pixels, between surface pixels.
HD95 is the larger of the two directed 95th percentiles (``compute_hausdorff_distance(percentile=95)``); NSD is the
share of both surfaces within ``tolerance`` of the other (``compute_surface_dice``). A class absent from an image's
truth has neither (NaN: the image is left out of that class's mean); present in the truth but never predicted, it
gets NSD 0 and HD95 the image diagonal, the largest distance the image has (MONAI gives inf there, which no mean
survives). Ignored pixels belong to no class's mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from segsweep.data.classes import IGNORE_INDEX


def surface(mask: np.ndarray) -> np.ndarray:
    """The surface pixels of a bool mask: those with a 4-neighbour (or the image border) outside it."""
    return mask & ~binary_erosion(mask, border_value=0)


def surface_distances(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every prediction surface pixel to the truth's surface, and back; both masks non-empty."""
    # Cropping to the union's bounding box is exact: a neighbour outside it is outside both masks (so the erosion's
    # border is right), and every surface pixel, hence every nearest one, lies inside it.
    rows, cols = np.nonzero(prediction | truth)
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    pred_surface, true_surface = surface(prediction[box]), surface(truth[box])
    # the distance to the nearest zero: the other mask's surface pixels (a non-empty mask has at least one)
    to_truth, to_prediction = distance_transform_edt(~true_surface), distance_transform_edt(~pred_surface)
    return to_truth[pred_surface], to_prediction[true_surface]


def image_surface_metrics(
    prediction: np.ndarray, truth: np.ndarray, num_classes: int, tolerance: float, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """HD95 and NSD [C] (float64) of one image's class-index maps [H,W]; NaN for the classes its truth lacks."""
    valid = truth != ignore_index
    hd95, nsd = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
    diagonal = math.hypot(*truth.shape)
    for index in range(num_classes):
        true_mask = truth == index
        if not true_mask.any():
            continue
        pred_mask = (prediction == index) & valid
        if not pred_mask.any():
            hd95[index], nsd[index] = diagonal, 0.0
            continue
        to_truth, to_prediction = surface_distances(pred_mask, true_mask)
        # torch.quantile, as MONAI: linear interpolation between the order statistics, as np.percentile's default
        hd95[index] = max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95))
        within = np.count_nonzero(to_truth <= tolerance) + np.count_nonzero(to_prediction <= tolerance)
        nsd[index] = within / (to_truth.size + to_prediction.size)
    return hd95, nsd


class SurfaceMetrics(Metric):
    """Per test image, the [C] HD95 and NSD of each class (``image_surface_metrics``), computed on the CPU.

    ``compute()`` gives two float64 tensors [images, C] in loader order; under DDP the ranks' images are concatenated.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_classes: int, tolerance: float, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if not tolerance >= 0:
            raise ValueError(f"module.nsd_tolerance must be >= 0 pixels, got {tolerance}")
        self.num_classes, self.tolerance, self.ignore_index = num_classes, float(tolerance), ignore_index
        self.add_state("hd95", default=[], dist_reduce_fx="cat")
        self.add_state("nsd", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds`` and ``target``: class-index maps [B,H,W]."""
        pairs = zip(preds.cpu().numpy(), target.cpu().numpy())
        values = [image_surface_metrics(p, t, self.num_classes, self.tolerance, self.ignore_index) for p, t in pairs]
        self.hd95.append(torch.tensor(np.array([hd for hd, _ in values]), device=target.device).reshape(-1, self.num_classes))
        self.nsd.append(torch.tensor(np.array([ns for _, ns in values]), device=target.device).reshape(-1, self.num_classes))

    def compute(self) -> tuple[Tensor, Tensor]:
        if len(self.hd95) == 0:
            empty = torch.zeros(0, self.num_classes, dtype=torch.float64)
            return empty, empty.clone()
        return dim_zero_cat(self.hd95).double(), dim_zero_cat(self.nsd).double()
