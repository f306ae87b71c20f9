"""Image files: any common format read as uint8 RGB (bombs refused from the header), class masks and images as PNG."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

log = logging.getLogger(__name__)

# Default pixel limit of read_image (conf/predict.yaml max_pixels): 100 megapixels, 300 MB as RGB.
DEFAULT_MAX_PIXELS = 100_000_000

# What a folder input picks up (case-insensitive); a file given by name is tried whatever its suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image file that cannot be read; the message is one line naming the file."""


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files of ``folder`` (sorted by name) and the other, skipped entries (other suffixes, and what is not a
    regular file: folders, pipes, devices, broken links); hidden entries are ignored."""
    images, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        (images if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(path)
    return images, skipped


def _to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """uint8 [H, W, 3]; other modes are converted with a logged note."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or 32-bit) greyscale: scale to 8 bits instead of clipping at 255
        # integers: float32 rounds exactly as float64 would (x / 257 never lands on .5) in half the memory
        values = np.asarray(image, dtype=np.float64 if mode == "F" else np.float32)
        peak = values.max(initial=0.0)
        if mode == "F" and peak <= 1.0:
            values = values * 255.0  # float image in [0, 1]
        elif mode.startswith("I;16") or peak > 255:
            values = values / 257.0  # 16-bit range: 65535 -> 255
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        log.info("%s: %s greyscale image converted to 8-bit RGB", path, mode)
        return np.repeat(grey[..., None], 3, axis=-1)
    if "A" in mode or (mode == "P" and "transparency" in image.info):
        note = "alpha channel dropped"
    elif mode in ("L", "1"):
        note = "greyscale, channel repeated"
    else:
        note = "converted"
    log.info("%s: %s image converted to RGB (%s)", path, mode, note)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """An image file as uint8 [3, H, W] RGB (EXIF orientation applied); ImageError naming the file otherwise.

    Images of more than ``max_pixels`` pixels (None: no limit) are refused from their header, before decoding.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with _pixel_limit(max_pixels), Image.open(path) as image:
            _check_size(path, image.size, max_pixels)
            image.load()
            image = ImageOps.exif_transpose(image)
            pixels = _to_rgb(image, path)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImageError(f"{path}: unreadable image, truncated or corrupt ({detail})") from None
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()


@contextmanager
def _pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's own bomb check replaced by ours: PIL only warns up to twice its limit and then errors without naming ours."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse an image whose header promises more than ``max_pixels`` pixels (decoding it would need 3 bytes each, or more)."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path}: refused, {width}x{height} = {width * height / 1e6:.1f} megapixels is more than "
            f"max_pixels={max_pixels} (raise max_pixels to allow it)"
        )


def palette_png(mask: Tensor, colors: Sequence[tuple[int, int, int]]) -> bytes:
    """A class-index mask [H, W] as an indexed ("P") PNG whose palette holds the class colours."""
    values = mask.detach().cpu()
    if values.numel() and (int(values.min()) < 0 or int(values.max()) > 255):
        raise ValueError("palette PNG: class indices must be in [0, 255]")
    image = Image.fromarray(values.to(torch.uint8).numpy())
    palette = [channel for color in colors for channel in color]
    image.putpalette(palette + [0] * (768 - len(palette)))
    return _png_bytes(image)


def rgb_png(image: Tensor) -> bytes:
    """A uint8 [3, H, W] image as an RGB PNG."""
    return _png_bytes(Image.fromarray(image.detach().cpu().permute(1, 2, 0).contiguous().numpy()))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
