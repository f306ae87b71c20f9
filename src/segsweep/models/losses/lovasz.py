"""Lovász-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018): a convex surrogate of the Jaccard loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.utils import prepare_inputs, register_class_weights


def lovasz_grad(foreground_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order (Berman et al., Alg. 1)."""
    positives = foreground_sorted.sum()
    intersection = positives - foreground_sorted.cumsum(0)
    union = positives + (1 - foreground_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    if foreground_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax_flat(probs: Tensor, labels: Tensor, class_weights: Tensor | None) -> Tensor:
    """Loss of the pixels of one image or batch: probs [P, C], labels [P] (valid pixels only); 0 without pixels.

    Averaged over the classes present in ``labels`` (the paper's ``classes='present'``), weighted when given."""
    losses, weights = [], []
    for label in range(probs.shape[1]):
        foreground = (labels == label).to(probs.dtype)
        if foreground.sum() == 0:
            continue
        errors = (foreground - probs[:, label]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(foreground[order])))
        weights.append(class_weights[label] if class_weights is not None else probs.new_tensor(1.0))
    if not losses:
        return probs.sum() * 0.0
    stacked, weight = torch.stack(losses), torch.stack(weights)
    return (stacked * weight).sum() / weight.sum().clamp_min(torch.finfo(stacked.dtype).tiny)


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax over the softmax probabilities; ``per_image=True`` averages the loss of each image, else one
    loss over all pixels of the batch. Ignored pixels are left out, and with ``per_image`` so is an image whose pixels
    are all ignored (it has no loss, not a loss of 0); a batch with no valid pixel gives 0 with zero gradients.
    With one-hot (hard) probabilities it equals 1 - IoU of each present class, averaged: the Jaccard loss it is the
    convex extension of.
    """

    def __init__(
        self,
        per_image: bool = False,
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        register_class_weights(self, class_weights)
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, weights, valid, safe_target = prepare_inputs(logits, target, self.class_weights, self.ignore_index)
            probs = logits.softmax(dim=1).movedim(1, -1)  # [B, H, W, C]
            if self.per_image:
                images = [(p[v], t[v]) for p, t, v in zip(probs, safe_target, valid) if v.any()]
                if not images:
                    return probs.sum() * 0.0
                return torch.stack([lovasz_softmax_flat(p, t, weights) for p, t in images]).mean()
            return lovasz_softmax_flat(probs[valid], safe_target[valid], weights)
