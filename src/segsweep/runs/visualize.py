"""Colour overlays of class masks on images (torchvision's drawing utilities), with a legend of the classes drawn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.nn.functional import interpolate
from torchvision.utils import draw_segmentation_masks, make_grid

# Rows blended at a time: draw_segmentation_masks needs some 40 bytes a pixel (float copies, one mask per
# class), so a large image (predict) is drawn in stripes to keep that bounded.
OVERLAY_ROWS = 256
WHITE = 255


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


def present(masks: Sequence[Tensor] | Tensor, count: int) -> list[int]:
    """The class indices below ``count`` that occur in any of ``masks`` (the ignore index and others left out)."""
    found = torch.zeros(count, dtype=torch.bool)
    for mask in masks:
        values = mask.flatten().long().cpu()
        found |= torch.bincount(values[values < count], minlength=count) > 0
    return [index for index in range(count) if found[index]]


def legend(names: Sequence[str], colors: Sequence[tuple[int, int, int]], width: int) -> Tensor:
    """uint8 [3,h,w]: a swatch and the name of each class, left to right in rows of ``width`` pixels (wider if one
    entry needs it), black on white; the text height grows with the width (12 px up to 600 px)."""
    font = ImageFont.load_default(size=max(12, width // 50))
    line = int(font.size) + 6
    entries = [(name, color, int(font.getlength(name)) + line + 12) for name, color in zip(names, colors)]
    width = max([width, *(size for _, _, size in entries)])
    placed, x, y = [], 0, 0
    for name, color, size in entries:
        if x and x + size > width:
            x, y = 0, y + line
        placed.append((name, color, x, y))
        x += size
    canvas = Image.new("RGB", (width, y + line + 4), (WHITE,) * 3)
    draw = ImageDraw.Draw(canvas)
    for name, color, left, top in placed:
        draw.rectangle((left + 4, top + 4, left + line - 2, top + line - 2), fill=tuple(color), outline=(0, 0, 0))
        draw.text((left + line + 2, top + 3), name, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def with_legend(image: Tensor, names: Sequence[str], colors: Sequence[tuple[int, int, int]], shown: Sequence[int]) -> Tensor:
    """uint8 [3,H',W']: ``image`` (uint8 [3,H,W], at the top left, unchanged) above the legend of classes ``shown``,
    padded white to the legend's width if that is wider."""
    strip = legend([names[index] for index in shown], [colors[index] for index in shown], image.shape[-1])
    padded = torch.full((3, image.shape[-2], strip.shape[-1]), WHITE, dtype=torch.uint8)
    padded[:, :, : image.shape[-1]] = image
    return torch.cat([padded, strip], dim=1)


def shrink(image: Tensor, longest: int) -> Tensor:
    """uint8 [3,H,W], shrunk (antialiased) so that its longest side is at most ``longest`` pixels."""
    scale = longest / max(image.shape[-2:])
    if scale >= 1:
        return image
    size = [max(1, round(side * scale)) for side in image.shape[-2:]]
    shrunk = interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return shrunk.round().clamp(0, 255).to(torch.uint8)


def comparison_grid(
    images: Tensor, targets: Tensor, predictions: Tensor, colors: Sequence[tuple[int, int, int]], names: Sequence[str]
) -> Tensor:
    """One row per scene: input, ground-truth overlay, prediction overlay, then the legend (uint8 [3,H',W'])."""
    rows = torch.stack([images.cpu(), overlay(images, targets, colors), overlay(images, predictions, colors)], dim=1)
    grid = make_grid(rows.flatten(0, 1), nrow=3, padding=2, pad_value=255)
    return with_legend(grid, names, colors, present([*targets, *predictions], len(names)))
