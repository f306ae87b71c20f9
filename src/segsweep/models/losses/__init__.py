"""Segmentation losses with one call signature: ``loss(logits [B,C,H,W], target [B,H,W] long) -> scalar``.

Every loss takes ``ignore_index`` and, except Generalized Dice (whose weights are its own), ``class_weights`` of
length C, and computes in float32 even under fp16/bf16 autocast, because sums over many pixels overflow or lose
precision in half. One family a module; the shared input handling and soft counting live in ``utils``. This face
re-exports them for code; configs name the defining module (``segsweep.models.losses.dice.DiceLoss``), because the
allowlist admits a class only where it is defined (runs/allowlist.MOVED_TARGETS maps the paths of before this layout).
"""

from segsweep.models.losses.boundary import BoundaryLoss, SurfaceLoss
from segsweep.models.losses.compound import CompoundLoss
from segsweep.models.losses.cross_entropy import CrossEntropyLoss, TopKCrossEntropyLoss
from segsweep.models.losses.dice import DiceCELoss, DiceLoss, GeneralizedDiceLoss
from segsweep.models.losses.focal import FocalLoss
from segsweep.models.losses.hausdorff import HausdorffDTLoss
from segsweep.models.losses.lovasz import LovaszSoftmaxLoss
from segsweep.models.losses.tversky import TverskyLoss
from segsweep.models.losses.utils import SoftCounts, soft_counts

__all__ = [
    "BoundaryLoss",
    "CompoundLoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "HausdorffDTLoss",
    "LovaszSoftmaxLoss",
    "SoftCounts",
    "SurfaceLoss",
    "TopKCrossEntropyLoss",
    "TverskyLoss",
    "soft_counts",
]
