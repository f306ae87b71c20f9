"""Per-image, per-class intersection and union pixel counts, for recomputing IoU on resampled images.

Any dataset-level IoU can be recomputed from them for any subset or resample of the test images: the report's
jackknife of the test-set variance (sweep/intervals.py) leaves each image out in turn.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from segsweep.data.classes import IGNORE_INDEX


class ImageIntersectionUnion(Metric):
    """Accumulates, for every image, the [C] intersection and [C] union pixel counts of each class.

    ``compute()`` gives two int64 tensors [images, C]; under DDP the ranks' images are concatenated.
    Summing both over images and dividing gives exactly the dataset-level IoU of the confusion matrix.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("intersection", default=[], dist_reduce_fx="cat")
        self.add_state("union", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds`` and ``target``: class-index maps [B,H,W]; ``ignore_index`` pixels of the target count nowhere."""
        classes = torch.arange(self.num_classes, device=target.device).view(1, -1, 1, 1)
        valid = (target != self.ignore_index).unsqueeze(1)
        predicted = (preds.unsqueeze(1) == classes) & valid
        truth = target.unsqueeze(1) == classes
        self.intersection.append((predicted & truth).sum(dim=(2, 3)))
        self.union.append((predicted | truth).sum(dim=(2, 3)))

    def compute(self) -> tuple[Tensor, Tensor]:
        # after a DDP sync the list state is one concatenated tensor, so test its length
        if len(self.intersection) == 0:
            empty = torch.zeros(0, self.num_classes, dtype=torch.long)
            return empty, empty.clone()
        return dim_zero_cat(self.intersection).long(), dim_zero_cat(self.union).long()
