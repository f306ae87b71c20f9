"""Colour overlays of class masks on images (torchvision's drawing utilities)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid

# Rows blended at a time: draw_segmentation_masks needs some 40 bytes a pixel (float copies, one mask per
# class), so a large image (predict) is drawn in stripes to keep that bounded.
OVERLAY_ROWS = 256


def overlay(images: Tensor, masks: Tensor, colors: Sequence[tuple[int, int, int]], alpha: float = 0.5) -> Tensor:
    """uint8 [B,3,H,W] images (on the CPU) with class masks [B,H,W] (any integer dtype) blended in the class colours."""
    classes = torch.arange(len(colors), device=masks.device)[:, None, None]
    out = torch.empty(images.shape, dtype=images.dtype)
    for index, (image, mask) in enumerate(zip(images, masks)):
        for top in range(0, image.shape[-2], OVERLAY_ROWS):
            rows = slice(top, top + OVERLAY_ROWS)
            drawn = (mask[None, rows] == classes).cpu()
            out[index, :, rows] = draw_segmentation_masks(image[:, rows].cpu(), drawn, alpha=alpha, colors=list(colors))
    return out


def comparison_grid(images: Tensor, targets: Tensor, predictions: Tensor, colors: Sequence[tuple[int, int, int]]) -> Tensor:
    """One row per scene: input, ground-truth overlay, prediction overlay (uint8 [3,H',W'])."""
    rows = torch.stack([images.cpu(), overlay(images, targets, colors), overlay(images, predictions, colors)], dim=1)
    return make_grid(rows.flatten(0, 1), nrow=3, padding=2, pad_value=255)
