"""Running a network on images: uint8 pixels as its [0, 1] input, sliding windows blended as MONAI's (Gaussian or constant)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images (0..255) as float32 in [0, 1], the networks' input range (datasets, predict, report and the
    prediction images of training all convert through here)."""
    return images.float().div(255.0)


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
) -> tuple[Tensor, Tensor]:
    """Tile weight and accumulated weight per pixel; cached since batches usually share one size."""
    weight = importance_map((rh, rw), mode, sigma_scale, device)
    norm = torch.zeros(full_h, full_w, device=device)
    for y, x in _grid(full_h, full_w, rh, rw, overlap):
        norm[y : y + rh, x : x + rw] += weight
    return weight, norm


def _grid(full_h: int, full_w: int, rh: int, rw: int, overlap: float) -> list[tuple[int, int]]:
    """Tile origins in row-major order: the order in which tiles are blended."""
    return [(y, x) for y in tile_starts(full_h, rh, overlap) for x in tile_starts(full_w, rw, overlap)]


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


@dataclass(frozen=True)
class _Plan:
    """Where the tiles of a batch go: tile size, centred zero padding of images smaller than a tile, tile origins."""

    rh: int
    rw: int
    top: int
    left: int
    height: int
    width: int
    full_h: int
    full_w: int
    grid: list[tuple[int, int]]


def _plan(images: Tensor, roi_size: int | tuple[int, int], overlap: float, tile_batch: int) -> _Plan:
    if images.ndim != 4:
        raise ValueError(f"images must be [B,C,H,W], got shape {tuple(images.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
    rh, rw = (roi_size, roi_size) if isinstance(roi_size, int) else roi_size
    height, width = images.shape[-2:]
    full_h, full_w = max(height, rh), max(width, rw)
    grid = _grid(full_h, full_w, rh, rw, overlap)
    return _Plan(rh, rw, (full_h - height) // 2, (full_w - width) // 2, height, width, full_h, full_w, grid)


def _window(image: Tensor, y: int, x: int, plan: _Plan) -> Tensor:
    """The tile at (y, x) of the padded image, padding only this tile (padding a huge image would copy it)."""
    y0, x0 = y - plan.top, x - plan.left
    crop = image[:, max(y0, 0) : y0 + plan.rh, max(x0, 0) : x0 + plan.rw]
    if crop.shape[-2:] == (plan.rh, plan.rw):
        return crop
    up, left = max(-y0, 0), max(-x0, 0)
    return F.pad(crop, (left, plan.rw - crop.shape[-1] - left, up, plan.rh - crop.shape[-2] - up))


def _predicted_tiles(
    images: Tensor, predictor: Callable[[Tensor], Tensor], plan: _Plan, tile_batch: int, progress: bool
) -> Iterator[tuple[int, int, int, Tensor]]:
    """(image index, y, x, float32 logits [K,h,w]) of every tile in image, row, column order, predicted in batches."""
    tiles = [(b, y, x) for b in range(images.shape[0]) for y, x in plan.grid]
    with _tile_progress(len(tiles), progress) as advance:
        for start in range(0, len(tiles), tile_batch):
            chunk = tiles[start : start + tile_batch]
            logits = predictor(torch.stack([_window(images[b], y, x, plan) for b, y, x in chunk]))
            if logits.shape[0] != len(chunk) or logits.shape[-2:] != (plan.rh, plan.rw):
                raise ValueError(f"predictor must return [N,K,{plan.rh},{plan.rw}] for N tiles, got {tuple(logits.shape)}")
            for (b, y, x), tile_logits in zip(chunk, logits.float()):
                yield b, y, x, tile_logits
            advance(len(chunk))


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
    Holds the whole batch's logits: for class indices of large images use `sliding_window_argmax`.
    """
    plan = _plan(images, roi_size, overlap, tile_batch)
    weight, norm = _tiling(plan.full_h, plan.full_w, plan.rh, plan.rw, overlap, mode, sigma_scale, images.device)
    out: Tensor | None = None
    for b, y, x, logits in _predicted_tiles(images, predictor, plan, tile_batch, progress):
        if out is None:
            out = torch.zeros(images.shape[0], logits.shape[0], plan.full_h, plan.full_w, device=images.device)
        out[b, :, y : y + plan.rh, x : x + plan.rw].addcmul_(logits, weight)
    assert out is not None  # at least one tile always exists
    out /= norm
    return out[:, :, plan.top : plan.top + plan.height, plan.left : plan.left + plan.width]


def sliding_window_argmax(
    images: Tensor,
    predictor: Callable[[Tensor], Tensor],
    roi_size: int | tuple[int, int],
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    tile_batch: int = 4,
    progress: bool = False,
) -> Tensor:
    """Class indices [B,H,W] (uint8 for up to 256 classes, else int64) of the blended logits, in bounded memory.

    Same tiles, blending and arithmetic as `sliding_window_inference` (so the same argmax), but the logits and
    weights live only for one stripe of tile height across the image: a row of pixels is reduced to class indices
    as soon as no later tile reaches it. `images` may be uint8 (the predictor converts each tile), so a large image
    is never held as float either.
    """
    plan = _plan(images, roi_size, overlap, tile_batch)
    weight = importance_map((plan.rh, plan.rw), mode, sigma_scale, images.device)
    labels: Tensor | None = None
    stripe = norm = torch.empty(0)
    image, origin = -1, 0  # the stripe holds rows origin .. origin + rh of the padded image

    def finish(stop: int) -> None:
        """Class indices of the stripe's rows origin .. stop (padded rows) into `labels`, cropped to the image."""
        assert labels is not None
        first, last = max(origin, plan.top), min(stop, plan.top + plan.height)
        if first < last:
            rows = stripe[:, first - origin : last - origin] / norm[first - origin : last - origin]
            columns = rows[:, :, plan.left : plan.left + plan.width]
            labels[image, first - plan.top : last - plan.top] = columns.argmax(dim=0).to(labels.dtype)

    for b, y, x, logits in _predicted_tiles(images, predictor, plan, tile_batch, progress):
        if labels is None:
            dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int64
            labels = torch.empty(images.shape[0], plan.height, plan.width, dtype=dtype, device=images.device)
            stripe = torch.zeros(logits.shape[0], plan.rh, plan.full_w, device=images.device)
            norm = torch.zeros(plan.rh, plan.full_w, device=images.device)
        if b != image:  # next image: the previous one is done to its last row
            if image >= 0:
                finish(plan.full_h)
            stripe.zero_()
            norm.zero_()
            image, origin = b, 0
        elif y > origin:  # a new row of tiles: rows above it get no more tiles
            finish(y)
            done = y - origin
            # shift the unfinished rows to the top, keeping their sums bit for bit
            stripe[:, : plan.rh - done] = stripe[:, done:].clone()
            norm[: plan.rh - done] = norm[done:].clone()
            stripe[:, plan.rh - done :] = 0
            norm[plan.rh - done :] = 0
            origin = y
        stripe[:, y - origin : y - origin + plan.rh, x : x + plan.rw].addcmul_(logits, weight)
        norm[y - origin : y - origin + plan.rh, x : x + plan.rw] += weight
    assert labels is not None  # at least one tile always exists
    finish(plan.full_h)
    return labels
