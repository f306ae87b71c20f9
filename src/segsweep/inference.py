"""Sliding-window inference with Gaussian or constant blending (numerically matches MONAI's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def tile_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of tiles along one axis; the last tile is flush with the border."""
    if roi >= size:
        return [0]
    # Same stride rule as MONAI (int() truncation), so tile positions agree exactly.
    stride = max(int(roi * (1 - overlap)), 1)
    count = -(-(size - roi) // stride) + 1
    return [min(i * stride, size - roi) for i in range(count)]


def importance_map(
    roi: tuple[int, int], mode: str = "gaussian", sigma_scale: float = 0.125, device: torch.device | str = "cpu"
) -> Tensor:
    """Per-pixel blending weight [h, w] of one tile."""
    if mode == "constant":
        return torch.ones(roi, device=device)
    if mode != "gaussian":
        raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
    axes = []
    for n in roi:
        # Centred on the tile centre (between two pixels for even sizes), not normalised to peak 1.
        offsets = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (offsets / (sigma_scale * n)) ** 2))
    weight = axes[0][:, None] * axes[1][None, :]
    # Corner weights are ~1e-7; MONAI floors them at 1e-3 so pixels covered only by tile corners still
    # get a well-conditioned average, and matching MONAI requires the same floor.
    return weight.clamp_(min=1e-3)


@lru_cache(maxsize=4)
def _tiling(
    full_h: int, full_w: int, rh: int, rw: int, overlap: float, mode: str, sigma_scale: float, device: torch.device
) -> tuple[list[tuple[int, int]], Tensor, Tensor]:
    """Tile origins, tile weight and accumulated weight per pixel; cached since batches usually share one size."""
    grid = [(y, x) for y in tile_starts(full_h, rh, overlap) for x in tile_starts(full_w, rw, overlap)]
    weight = importance_map((rh, rw), mode, sigma_scale, device)
    norm = torch.zeros(full_h, full_w, device=device)
    for y, x in grid:
        norm[y : y + rh, x : x + rw] += weight
    return grid, weight, norm


@contextmanager
def _tile_progress(total: int, enabled: bool) -> Iterator[Callable[[int], object]]:
    """Yield a callback advancing a rich (or tqdm) progress bar by n tiles; a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    try:
        from rich.progress import Progress
    except ImportError:
        from tqdm.auto import tqdm

        with tqdm(total=total, desc="sliding window", unit="tile") as bar:
            yield bar.update
        return
    with Progress(transient=True) as bar:
        task = bar.add_task("sliding window", total=total)
        yield lambda n: bar.advance(task, n)


def sliding_window_inference(
    images: Tensor,
    predictor: Callable[[Tensor], Tensor],
    roi_size: int | tuple[int, int],
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    tile_batch: int = 4,
    progress: bool = False,
) -> Tensor:
    """Blend predictor logits over overlapping tiles of `images` [B,Cin,H,W] into float32 logits [B,K,H,W].

    Images smaller than the tile are zero-padded (centred) and the result cropped back. Tiles from all
    images are fed to `predictor` `tile_batch` at a time; it must map [N,Cin,h,w] to [N,K,h,w].
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B,C,H,W], got shape {tuple(images.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
    rh, rw = (roi_size, roi_size) if isinstance(roi_size, int) else roi_size
    batch, _, height, width = images.shape

    pad_h, pad_w = max(rh - height, 0), max(rw - width, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        images = F.pad(images, (left, pad_w - left, top, pad_h - top))
    full_h, full_w = images.shape[-2:]

    grid, weight, norm = _tiling(full_h, full_w, rh, rw, overlap, mode, sigma_scale, images.device)
    tiles = [(b, y, x) for b in range(batch) for y, x in grid]

    out: Tensor | None = None
    with _tile_progress(len(tiles), progress) as advance:
        for start in range(0, len(tiles), tile_batch):
            chunk = tiles[start : start + tile_batch]
            logits = predictor(torch.stack([images[b, :, y : y + rh, x : x + rw] for b, y, x in chunk]))
            if logits.shape[0] != len(chunk) or logits.shape[-2:] != (rh, rw):
                raise ValueError(f"predictor must return [N,K,{rh},{rw}] for N tiles, got {tuple(logits.shape)}")
            if out is None:
                out = torch.zeros(batch, logits.shape[1], full_h, full_w, device=images.device)
            logits = logits.float()
            for (b, y, x), tile_logits in zip(chunk, logits):
                out[b, :, y : y + rh, x : x + rw].addcmul_(tile_logits, weight)
            advance(len(chunk))
    assert out is not None  # at least one tile always exists
    out /= norm
    return out[:, :, top : top + height, left : left + width]
