"""Segmentation losses with one call signature: ``loss(logits [B,C,H,W], target [B,H,W] long) -> scalar``.

Every loss takes ``class_weights`` (length C) and ``ignore_index``, and computes in float32
even under fp16/bf16 autocast, because sums over many pixels overflow or lose precision in half.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, averaged over non-ignored pixels weighted by their class weight."""

    def __init__(
        self,
        class_weights: Tensor | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        _register_class_weights(self, class_weights)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = _prepare(logits, target, self.class_weights, self.ignore_index)
            per_pixel = F.cross_entropy(
                logits,
                target,
                weight=weights,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction="none",
            )
            return _weighted_mean(per_pixel, valid, safe_target, weights)


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
        _register_class_weights(self, class_weights)
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = _prepare(logits, target, self.class_weights, self.ignore_index)
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
            return _weighted_mean(per_pixel, valid, safe_target, weights)


class DiceLoss(nn.Module):
    """Soft multiclass Dice loss on softmax probabilities: 1 - mean over classes of Dice.

    Per class, Dice = (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth), summed over the
    pixels of the whole batch (``batch=True``) or of each image (``batch=False``, then averaged
    over images). Ignored pixels are dropped from both p and y. A class absent from the target
    and not predicted scores Dice ~1 through ``smooth``. With ``class_weights`` the class mean is
    sum(w * loss_c) / sum(w); ``include_background=False`` drops class 0 and its weight.
    """

    def __init__(
        self,
        include_background: bool = True,
        smooth: float = 1e-5,
        batch: bool = True,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        _register_class_weights(self, class_weights)
        self.include_background = include_background
        self.smooth = smooth
        self.batch = batch
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = _prepare(logits, target, self.class_weights, self.ignore_index)
            mask = valid.unsqueeze(1)
            probs = logits.softmax(dim=1) * mask
            onehot = F.one_hot(safe_target, logits.shape[1]).movedim(-1, 1).to(probs.dtype) * mask
            if not self.include_background:
                probs, onehot = probs[:, 1:], onehot[:, 1:]
                weights = None if weights is None else weights[1:]
            spatial = tuple(range(2, logits.ndim))
            dims = (0, *spatial) if self.batch else spatial
            intersection = (probs * onehot).sum(dims)
            denominator = probs.sum(dims) + onehot.sum(dims)
            per_class = 1 - (2 * intersection + self.smooth) / (denominator + self.smooth)
            if weights is None:
                return per_class.mean()
            return ((per_class * weights).sum(-1) / weights.sum()).mean()


class DiceCELoss(nn.Module):
    """``dice_weight * DiceLoss + ce_weight * CrossEntropyLoss``, both with the same class weights."""

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        smooth: float = 1e-5,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.dice = DiceLoss(
            include_background=include_background,
            smooth=smooth,
            class_weights=class_weights,
            ignore_index=ignore_index,
        )
        self.ce = CrossEntropyLoss(class_weights=class_weights, label_smoothing=label_smoothing, ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(logits, target)


def _register_class_weights(module: nn.Module, class_weights: Tensor | Sequence[float] | None) -> None:
    # A buffer follows the module across devices; non-persistent so that checkpoints of runs
    # with and without class weights load into either configuration.
    if class_weights is not None:
        if isinstance(class_weights, Tensor):
            class_weights = class_weights.detach().float()
        else:
            class_weights = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
        if class_weights.ndim != 1 or not torch.isfinite(class_weights).all() or (class_weights < 0).any():
            raise ValueError(
                f"loss.class_weights: expected a 1-D vector of finite, non-negative numbers, got {class_weights.tolist()}"
            )
        if class_weights.sum() == 0:
            raise ValueError("loss.class_weights: weights are all zero")
    module.register_buffer("class_weights", class_weights, persistent=False)


def _prepare(
    logits: Tensor, target: Tensor, class_weights: Tensor | None, ignore_index: int
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Validate inputs; return float32 logits and weights, the valid-pixel mask and a target safe to index with."""
    if logits.ndim < 3 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"loss: expected logits [B,C,H,W] and target [B,H,W], got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    if class_weights is not None:
        if class_weights.numel() != num_classes:
            raise ValueError(
                f"loss.class_weights: got {class_weights.numel()} weights but the model predicts {num_classes} classes"
            )
        # .float() because a bf16-true/fp16-true trainer casts buffers to half precision.
        class_weights = class_weights.float()
    valid = target != ignore_index
    out_of_range = valid & ((target < 0) | (target >= num_classes))
    if out_of_range.any():
        raise ValueError(
            f"loss: target labels {target[out_of_range].unique().tolist()} are outside [0, {num_classes}) "
            f"and are not ignore_index={ignore_index}"
        )
    return logits.float(), class_weights, valid, target.masked_fill(~valid, 0)


def _weighted_mean(per_pixel: Tensor, valid: Tensor, safe_target: Tensor, weights: Tensor | None) -> Tensor:
    """Sum of ``per_pixel`` over the summed class weight (or count) of the valid pixels, as F.cross_entropy's mean."""
    norm = valid.to(per_pixel.dtype) if weights is None else weights[safe_target] * valid
    # Clamped so a batch with every pixel ignored gives 0 with zero gradients instead of 0/0 = NaN.
    return per_pixel.sum() / norm.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)
