"""Colour overlays of class masks on images (torchvision's drawing utilities)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid


def overlay(images: Tensor, masks: Tensor, colors: Sequence[tuple[int, int, int]], alpha: float = 0.5) -> Tensor:
    """uint8 [B,3,H,W] images with class masks [B,H,W] blended in the class colours."""
    classes = torch.arange(len(colors), device=masks.device)[:, None, None]
    return torch.stack(
        [
            draw_segmentation_masks(image.cpu(), (mask[None] == classes).cpu(), alpha=alpha, colors=list(colors))
            for image, mask in zip(images, masks)
        ]
    )


def comparison_grid(images: Tensor, targets: Tensor, predictions: Tensor, colors: Sequence[tuple[int, int, int]]) -> Tensor:
    """One row per scene: input, ground-truth overlay, prediction overlay (uint8 [3,H',W'])."""
    rows = torch.stack([images.cpu(), overlay(images, targets, colors), overlay(images, predictions, colors)], dim=1)
    return make_grid(rows.flatten(0, 1), nrow=3, padding=2, pad_value=255)
