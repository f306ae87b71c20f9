"""What every loss shares: class-weight buffers, validated float32 inputs with the ignore mask, soft per-class counts.

The counting is written once: Dice, Generalized Dice and Tversky are ratios of the same soft true-positive,
false-positive and false-negative counts, and compute them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def checks_on_host(tensor: Tensor) -> bool:
    """Whether checks on ``tensor``'s values may read them on the host at once: on the CPU they cost nothing; on a GPU
    reading a value back makes the step wait for the device, so checks stay there (asserted or noted on the device)."""
    return tensor.device.type == "cpu"


def register_class_weights(module: nn.Module, class_weights: Tensor | Sequence[float] | None) -> None:
    """Validate ``class_weights`` (finite, non-negative, not all zero) and store them as ``module.class_weights``."""
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


def prepare_inputs(
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
    if checks_on_host(target):
        if out_of_range.any():
            raise ValueError(
                f"loss: target labels {target[out_of_range].unique().tolist()} are outside [0, {num_classes}) "
                f"and are not ignore_index={ignore_index}"
            )
    else:
        # On a GPU reading the answer back would stall every step until the device catches up: the check runs on
        # the device instead, and a bad label stops training with a device-side assertion.
        torch._assert_async(~out_of_range.any(), f"loss: target labels outside [0, {num_classes}) and not ignore_index")
    return logits.float(), class_weights, valid, target.masked_fill(~valid, 0)


def weighted_mean(per_pixel: Tensor, valid: Tensor, safe_target: Tensor, weights: Tensor | None) -> Tensor:
    """Sum of ``per_pixel`` over the summed class weight (or count) of the valid pixels, as F.cross_entropy's mean."""
    norm = valid.to(per_pixel.dtype) if weights is None else weights[safe_target] * valid
    # Clamped so a batch with every pixel ignored gives 0 with zero gradients instead of 0/0 = NaN.
    return per_pixel.sum() / norm.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


class SoftCounts(NamedTuple):
    """Soft per-class counts over the valid pixels, [C] for the batch or [B, C] per image."""

    true_positive: Tensor  # sum of p * y
    false_positive: Tensor  # sum of p * (1 - y)
    false_negative: Tensor  # sum of (1 - p) * y
    predicted: Tensor  # sum of p: TP + FP
    actual: Tensor  # sum of y: TP + FN, a pixel count (no gradient)


def soft_counts(logits: Tensor, safe_target: Tensor, valid: Tensor, batch: bool) -> SoftCounts:
    """The softmax probabilities against the one-hot target, ignored pixels dropped from both, summed over the
    pixels of the whole batch (``batch``) or of each image."""
    mask = valid.unsqueeze(1)
    probs = logits.softmax(dim=1) * mask
    onehot = F.one_hot(safe_target, logits.shape[1]).movedim(-1, 1).to(probs.dtype) * mask
    spatial = tuple(range(2, logits.ndim))
    dims = (0, *spatial) if batch else spatial
    true_positive, predicted, actual = (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)
    # FP and FN built here, in this order, even for a loss that needs only TP and the sums: autograd adds a tensor's
    # gradient contributions in the order its uses were built, so this keeps every loss's gradients to the bit.
    return SoftCounts(true_positive, predicted - true_positive, actual - true_positive, predicted, actual)


def class_mean(per_class: Tensor, weights: Tensor | None) -> Tensor:
    """The mean over classes (the last dim) of a per-class loss, sum(w * loss_c) / sum(w) when weighted, then over images."""
    if weights is None:
        return per_class.mean()
    return ((per_class * weights).sum(-1) / weights.sum()).mean()
