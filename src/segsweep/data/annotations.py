"""Labels as annotation tools export them (data=coco|labelme|cvat_mask): classes by name, overlaps, cached masks.

Each format's module (data/coco.py, data/labelme.py, data/cvat_mask.py) reads its export into an ``Export``: per split
the labelled images, each with its regions (a category name and a boolean mask, drawn only when the masks are not
cached yet), and the export's category names. This module makes them the pairs a folder dataset reads:

- classes: 0 is ``background`` (every pixel no region covers, and a category named ``background`` or Labelme's
  ``_background_``), then the export's categories, or ``data.classes`` (a subset, in its order); the categories it
  leaves out become background or void (``data.unlisted``: background | void);
- overlaps: the smaller region is on top (areas in pixels as drawn; of equal areas, the later one);
- the masks are drawn once into the mask cache (data/mask_cache.py), never into data.root, and drawn again when an
  annotation file, an image or the class choice changes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segsweep.data.classes import IGNORE_INDEX, Color, distinct_colors
from segsweep.data.folder_classes import FolderClasses, FolderDataError, preset_classes
from segsweep.data.folder_files import Pair
from segsweep.data.mask_cache import MaskCache

log = logging.getLogger(__name__)

BACKGROUND = "background"
BACKGROUND_NAMES = (BACKGROUND, "_background_")  # Labelme's labelme2voc names it _background_
UNLISTED = ("background", "void")
_ORIENTATION, _TRANSPOSED = 0x0112, (5, 6, 7, 8)  # EXIF orientations that swap width and height

# a category name and its pixels, bool [H, W]
Region = tuple[str, np.ndarray]


@dataclass(frozen=True)
class Item:
    """One labelled image: ``name`` its path relative to data.root, ``source`` the file that labels it, ``size``
    (height, width) as that file states it (None: it states none), ``regions(height, width)`` its drawn regions."""

    image: Path
    name: str
    source: Path
    size: tuple[int, int] | None
    regions: Callable[[int, int], list[Region]]


@dataclass(frozen=True)
class Export:
    """An export as read: its splits (``train``; ``val``, ``test`` where it has them), its category names (in the
    export's order), their colours where it gives them, a digest of its annotation files, and what to log once."""

    splits: dict[str, list[Item]]
    categories: list[str]
    where: Path  # the file (or folder) that defines the categories, named by errors about data.classes
    digest: str
    colors: dict[str, Color] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AnnotationOptions:
    """The keys of conf/data/{coco,labelme,cvat_mask}.yaml that say how an export becomes classes and masks."""

    classes: tuple[str, ...] | None = None
    unlisted: str = "background"
    line_width: int = 10
    coco_annotations: str = "{split}/_annotations.coco.json"
    coco_images: str = "{split}"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.unlisted not in UNLISTED:
            raise ValueError(f"data.unlisted must be one of {', '.join(UNLISTED)}, got {self.unlisted!r}")
        if isinstance(self.line_width, bool) or not isinstance(self.line_width, int) or self.line_width < 1:
            raise ValueError(f"data.line_width must be an integer >= 1 (pixels), got {self.line_width!r}")
        if self.classes is not None:
            if not self.classes or not all(isinstance(name, str) and name.strip() for name in self.classes):
                raise ValueError(f"data.classes must be a non-empty list of category names (or null: all), got {self.classes}")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"data.classes: names must be unique, got {list(self.classes)}")
            if set(self.classes) & set(BACKGROUND_NAMES):
                raise ValueError("data.classes: background is always class 0; list the other classes")


def class_table(export: Export, options: AnnotationOptions) -> tuple[list[str], dict[str, int], int]:
    """Class names (background first), each chosen category's class, and the class of every other category."""
    found = [name for name in dict.fromkeys(export.categories) if name not in BACKGROUND_NAMES]
    chosen = found if options.classes is None else list(options.classes)
    for name in chosen:
        if name not in found:
            raise FolderDataError(
                f"{export.where}: data.classes names {name!r}, not a category of this export ({', '.join(found) or 'none'})"
            )
    names = [BACKGROUND, *chosen]
    lookup = {name: 0 for name in BACKGROUND_NAMES} | {name: index for index, name in enumerate(names)}
    return names, lookup, 0 if options.unlisted == "background" else IGNORE_INDEX


def paint(height: int, width: int, regions: Sequence[Region], lookup: dict[str, int], other: int) -> np.ndarray:
    """uint8 [H, W] classes: background where no region is, the smaller region on top where they overlap."""
    mask = np.zeros((height, width), dtype=np.uint8)
    areas = [int(pixels.sum()) for _, pixels in regions]
    for index in sorted(range(len(regions)), key=lambda i: -areas[i]):  # stable: of equal areas the later is on top
        name, pixels = regions[index]
        mask[pixels] = lookup.get(name, other)
    return mask


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, as read_image will decode it (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_ORIENTATION) in _TRANSPOSED:
                width, height = height, width
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise FolderDataError(f"{path}: unreadable image ({type(error).__name__}: {error})".splitlines()[0]) from None
    return height, width


def _draw(item: Item, lookup: dict[str, int], other: int) -> np.ndarray:
    height, width = image_size(item.image)
    if item.size is not None and item.size != (height, width):
        raise FolderDataError(
            f"{item.source}: says {item.image.name} is {item.size[1]}x{item.size[0]} (WxH), but the file is {width}x{height}"
        )
    return paint(height, width, item.regions(height, width), lookup, other)


def layout(kind: str, root: Path, export: Export, options: AnnotationOptions) -> tuple[dict[str, list[Pair]], FolderClasses]:
    """The pairs of each split (images with their cached masks, drawn now unless cached) and the classes."""
    names, lookup, other = class_table(export, options)
    items = [item for split in export.splits.values() for item in split]
    key = [kind, str(root), export.digest, repr(names), str(other), str(options.line_width)]
    for item in items:
        stat = item.image.stat()
        key.append(f"{item.name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    cache = MaskCache(options.cache_dir, kind, "\n".join(key).encode())
    every = [item.name for item in items]
    if not cache.complete(every):
        log.info("%s: drawing %d masks from the %s export (once; cached in %s)", root, len(items), kind, cache.folder)
        for item in items:
            cache.write(item.name, _draw(item, lookup, other))
        cache.finish(every)
    colors = None
    if export.colors:
        fallback = dict(zip(names, distinct_colors(len(names))))
        colors = [export.colors.get(name, fallback[name]) for name in names]
    spec = preset_classes(f"{kind} {root}", names, colors, None)
    pairs = {
        split: [Pair(item.image, cache.path(item.name), item.name) for item in found] for split, found in export.splits.items()
    }
    return pairs, spec


def relative_name(image: Path, root: Path, source: Path) -> str:
    """``image``'s path relative to data.root (the pair's name); an image outside data.root is one line naming ``source``."""
    try:
        return str(Path(os.path.normpath(image)).relative_to(root))  # ``..`` of a relative path, links kept
    except ValueError:
        raise FolderDataError(f"{source}: names {image}, outside data.root ({root})") from None
