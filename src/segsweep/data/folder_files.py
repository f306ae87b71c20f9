"""A folder dataset's files: image/mask pairs by stem, the one-time cached scan, the lazy datasets.

The scan checks and counts every pair once and caches the result outside the dataset; the datasets decode pairs on
access (in DataLoader workers).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from segsweep.data.augment import Augment
from segsweep.data.folder_classes import FolderClasses, FolderDataError, MaskReader, quiet_image_reads
from segsweep.data.images import IMAGE_SUFFIXES, ImageError, read_image
from segsweep.data.scan_cache import SCAN_VERSION, read_scan, write_scan
from segsweep.inference import to_unit_float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One image and its mask; ``name`` is the image's path relative to the dataset root."""

    image: Path
    mask: Path
    name: str
    # more channels of the image, one greyscale file each (nnU-Net's <case>_0001.png, ...), stacked after ``image``'s
    channels: tuple[Path, ...] = ()


def read_pair_image(pair: Pair) -> Tensor:
    """The pair's image as uint8 [3, H, W]: one file read as RGB, or three single-channel files stacked."""
    if not pair.channels:
        return read_image(pair.image)
    planes = [read_image(path)[0] for path in (pair.image, *pair.channels)]
    sizes = {tuple(plane.shape) for plane in planes}
    if len(sizes) > 1:
        raise ImageError(f"{pair.image}: its channel files differ in size ({', '.join(str(size) for size in sizes)})")
    return torch.stack(planes)


def _files(folder: Path) -> dict[str, Path]:
    """Image-suffixed files of ``folder`` by stem; two files sharing a stem are an error naming both."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if any("\udc80" <= char <= "\udcff" for char in path.name):  # bytes that are not UTF-8, as Python decodes them
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            raise FolderDataError(f"{shown}: file name is not valid UTF-8: rename it")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            log.info("%s: skipped, not an image file suffix (%s)", path, ", ".join(IMAGE_SUFFIXES))
            continue
        if path.stem in found:
            raise FolderDataError(f"{path}: same name stem as {found[path.stem].name}; image/mask pairing is by stem")
        found[path.stem] = path
    return found


def list_pairs(root: Path, split: str) -> list[Pair] | None:
    """The pairs of ``root/split`` sorted by name, or None if the split folder does not exist."""
    split_dir = root / split
    if not split_dir.exists():
        return None
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FolderDataError(f"{folder}: missing; a split folder holds images/ and masks/ (paired by file stem)")
    images, masks = _files(images_dir), _files(masks_dir)
    for stem, path in images.items():
        if stem not in masks:
            raise FolderDataError(f"{path}: image without a mask (expected {masks_dir / stem}.png)")
    for stem, path in masks.items():
        if stem not in images:
            raise FolderDataError(f"{path}: mask without an image (expected {images_dir / stem}.<png|jpg|...>)")
    if not images:
        raise FolderDataError(f"{images_dir}: empty split, no image files")
    return [Pair(images[stem], masks[stem], str(images[stem].relative_to(root))) for stem in sorted(images)]


# ---------------------------------------------------------------------------------------------------- the scan


def _scan_pair(pair: Pair, reader: MaskReader) -> tuple[str, Any]:
    """("ok", [height, width, mode, class pixel counts]) or ("error", one line naming the file)."""
    try:
        with quiet_image_reads():
            image = read_pair_image(pair)
        with Image.open(pair.image) as opened:
            mode = opened.mode
        mask = reader.read(pair.mask)
    except (ImageError, FolderDataError) as error:
        return "error", str(error)
    except (OSError, ValueError) as error:  # e.g. unidentified by Image.open before read_image's own checks
        return "error", f"{pair.image}: unreadable image ({type(error).__name__}: {error})".splitlines()[0]
    height, width = image.shape[-2:]
    if mask.shape != (height, width):
        return "error", (
            f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {pair.image.name} is {width}x{height}"
        )
    counts = np.bincount(mask.ravel(), minlength=256)[: reader.num_classes]
    return "ok", [int(height), int(width), mode, counts.tolist()]


_WORKER_READER: MaskReader | None = None


def _init_worker(reader: MaskReader) -> None:
    global _WORKER_READER
    _WORKER_READER = reader
    torch.set_num_threads(1)


def _scan_in_worker(pair: Pair) -> tuple[str, Any]:
    assert _WORKER_READER is not None
    return _scan_pair(pair, _WORKER_READER)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segsweep" / "folder"


def scan_key(spec: FolderClasses, pairs: Sequence[Pair]) -> str:
    """A hash of classes.yaml and every file's path, size and mtime: equal keys mean the scan still holds."""
    digest = hashlib.sha256(f"segsweep-folder-scan-{SCAN_VERSION}\n".encode() + spec.text + b"\n")
    for pair in pairs:
        for path in (pair.image, *pair.channels, pair.mask):
            stat = path.stat()
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def scan(pairs: Sequence[Pair], spec: FolderClasses, cache_dir: Path | None, workers: int, root: Path) -> dict[str, list[Any]]:
    """Per pair (by name): [height, width, image mode, class pixel counts]; checked and counted once, then cached."""
    reader = MaskReader(spec)
    cache_file = (cache_dir or default_cache_dir()) / f"{scan_key(spec, pairs)}.json"
    cached = read_scan(cache_file, (pair.name for pair in pairs), reader.num_classes)
    if cached is not None:
        log.info("%s: %d image/mask pairs checked before (cache %s)", root, len(pairs), cache_file)
        return cached
    log.info(
        "%s: checking %d image/mask pairs and counting class pixels (once; cached in %s)", root, len(pairs), cache_file.parent
    )
    results: dict[str, list[Any]] = {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("scanning {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as progress:
        task = progress.add_task(str(root.name), total=len(pairs))
        if workers > 1 and len(pairs) >= 64:
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(reader,)
            ) as pool:
                outcomes = pool.map(_scan_in_worker, pairs, chunksize=16)
                for pair, (status, value) in zip(pairs, outcomes):
                    if status == "error":
                        pool.shutdown(cancel_futures=True)
                        raise FolderDataError(value)
                    results[pair.name] = value
                    progress.advance(task)
        else:
            for pair in pairs:
                status, value = _scan_pair(pair, reader)
                if status == "error":
                    raise FolderDataError(value)
                results[pair.name] = value
                progress.advance(task)
    modes = sorted({value[2] for value in results.values()} - {"RGB"})
    if modes:
        log.info("%s: images of mode %s are converted to RGB", root, ", ".join(modes))
    write_scan(cache_file, root, results)
    return results


# ---------------------------------------------------------------------------------------------------- datasets


class FolderDataset(Dataset):
    """Image/mask pairs decoded on access; items are float images in [0, 1] and long masks.

    With ``augment`` (training), an item is ``(index, epoch)`` from EpochSeededSampler and becomes a
    ``crop_size`` crop; without, an item is a whole image.
    """

    def __init__(self, pairs: Sequence[Pair], reader: MaskReader, augment: Augment | None = None) -> None:
        self.pairs, self.reader, self.augment = list(pairs), reader, augment

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """uint8 [3,H,W] image and uint8 [H,W] mask of pair ``index``, unaugmented."""
        pair = self.pairs[index]
        with quiet_image_reads():
            image = read_pair_image(pair)
        return image, torch.from_numpy(self.reader.read(pair.mask))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image, mask = self.load(index)
        if self.augment is not None:
            image, mask = self.augment(image, mask, index, epoch)
        return to_unit_float(image), mask.long()


def pad_to(images: Tensor, masks: Tensor, height: int, width: int, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Pad at the bottom/right: images with 0, masks with the ignore index (never scored)."""
    pad = (0, width - images.shape[-1], 0, height - images.shape[-2])
    return TF.pad(images, pad, value=0), TF.pad(masks, pad, value=ignore_index)


class PadCollate:
    """Batches of whole images of different sizes, padded to the largest (masks with the ignore index)."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        height = max(image.shape[-2] for image, _ in items)
        width = max(image.shape[-1] for image, _ in items)
        padded = [pad_to(image, mask, height, width, self.ignore_index) for image, mask in items]
        return torch.stack([image for image, _ in padded]), torch.stack([mask for _, mask in padded])


def center_fit(image: Tensor, mask: Tensor, size: int, ignore_index: int) -> tuple[Tensor, Tensor]:
    """A ``size`` square from the centre of an image: cropped where larger, padded (mask: ignore) where smaller."""
    height, width = image.shape[-2:]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    image, mask = image[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]
    pad_h, pad_w = size - image.shape[-2], size - image.shape[-1]
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return TF.pad(image, pad, value=0), TF.pad(mask, pad, value=ignore_index)
