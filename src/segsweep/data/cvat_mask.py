"""CVAT "Segmentation mask 1.1" exports (data=cvat_mask): labelmap.txt's labels and colours, SegmentationClass/ masks.

```
<root>/labelmap.txt                      # label:r,g,b:parts:actions, one label a line ('#' comments)
<root>/ImageSets/Segmentation/<subset>.txt   one image name (no extension) a line: train, val, test; default is train
<root>/SegmentationClass/<name>.png      each pixel the colour of its label (RGB, or a palette)
<root>/JPEGImages/<name>.<jpg|png|...>   the images (export with "Save images")
```

The labels are the classes in labelmap.txt's order (``background``, CVAT's 0,0,0, is class 0); ``data.classes`` may
choose a subset. A mask colour that labelmap.txt does not list is one line naming the mask and the colour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segsweep.data.annotations import AnnotationOptions, Export, Item, Region
from segsweep.data.classes import Color
from segsweep.data.folder_classes import FolderDataError
from segsweep.data.images import IMAGE_SUFFIXES

LABELMAP = "labelmap.txt"
LISTS = Path("ImageSets") / "Segmentation"
SUBSETS = {"train": "train", "default": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def labelmap(path: Path) -> dict[str, Color]:
    """label name -> RGB colour, in the file's order; a malformed line is one line naming it."""
    if not path.is_file():
        raise FolderDataError(f"no {path.name} under {path.parent}: is data.root a CVAT Segmentation mask 1.1 export?")
    colors: dict[str, Color] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        channels = rest.split(":")[0].split(",")
        try:
            color = tuple(int(channel) for channel in channels)
        except ValueError:
            color = ()
        if not name.strip() or len(color) != 3 or not all(0 <= channel <= 255 for channel in color):
            raise FolderDataError(f"{path}:{number}: expected label:r,g,b:parts:actions, got {line.strip()!r}")
        if color in colors.values():
            raise FolderDataError(f"{path}:{number}: colour {list(color)} is another label's, too")
        colors[name.strip()] = color  # type: ignore[assignment]
    if not colors:
        raise FolderDataError(f"{path}: lists no labels")
    return colors


def _regions(mask: Path, colors: dict[str, Color], table: Path) -> Callable[[int, int], list[Region]]:
    codes = {(r << 16) | (g << 8) | b: name for name, (r, g, b) in colors.items()}

    def regions(height: int, width: int) -> list[Region]:
        try:
            with Image.open(mask) as image:
                rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        except (UnidentifiedImageError, OSError, ValueError):
            raise FolderDataError(f"{mask}: unreadable mask") from None
        if rgb.shape[:2] != (height, width):
            raise FolderDataError(f"{mask}: mask is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but its image is {width}x{height}")
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        found = np.unique(code)
        unknown = [int(value) for value in found if int(value) not in codes]
        if unknown:
            shown = ", ".join(str([value >> 16, (value >> 8) & 255, value & 255]) for value in unknown[:5])
            raise FolderDataError(f"{mask}: colours {shown} are not in {table}")
        return [(codes[int(value)], code == value) for value in found]

    return regions


def _image(folder: Path, stem: str) -> Path | None:
    return next((path for path in sorted(folder.glob(f"{stem}.*")) if path.suffix.lower() in IMAGE_SUFFIXES), None)


def read(root: Path, options: AnnotationOptions) -> Export:
    """The export at ``root``: its subsets as splits, labelmap.txt's labels and colours, a digest of its files."""
    table = root / LABELMAP
    colors = labelmap(table)
    lists = sorted((root / LISTS).glob("*.txt")) if (root / LISTS).is_dir() else []
    if not any(path.stem.lower() in SUBSETS for path in lists):
        raise FolderDataError(
            f"no {LISTS}/default.txt (or train.txt) under {root}: is data.root a CVAT Segmentation mask export?"
        )
    for folder in ("JPEGImages", "SegmentationClass"):
        if not (root / folder).is_dir():
            raise FolderDataError(f"no {folder}/ under {root}: export the task as Segmentation mask 1.1 with Save images")
    digest = hashlib.sha256(table.read_bytes())
    splits: dict[str, list[Item]] = {}
    notes = []
    for listing in lists:
        split = SUBSETS.get(listing.stem.lower())
        if split is None:
            notes.append(f"{listing}: subset {listing.stem} is not train, val, test or default: not used")
            continue
        digest.update(listing.read_bytes())
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            stem = line.strip()
            if not stem:
                continue
            image, mask = _image(root / "JPEGImages", stem), root / "SegmentationClass" / f"{stem}.png"
            if image is None or not mask.is_file():
                missing = mask if image is not None else root / "JPEGImages" / f"{stem}.<jpg|png|...>"
                raise FolderDataError(f"{listing}:{number}: lists {stem}, but {missing} is missing")
            if any(item.name.startswith(f"JPEGImages/{stem}.") for items in splits.values() for item in items):
                raise FolderDataError(f"{listing}:{number}: {stem} is listed in another subset (or twice), too")
            stat = mask.stat()
            digest.update(f"{mask}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            name = str(image.relative_to(root))
            splits.setdefault(split, []).append(Item(image, name, mask, None, _regions(mask, colors, table)))
    if "train" not in splits:
        raise FolderDataError(f"{root / LISTS}: no train (or default) subset lists an image")
    counts = ", ".join(f"{split} {len(items)}" for split, items in splits.items())
    notes.append(f"{root}: CVAT segmentation masks ({counts} images), labels {', '.join(colors)}")
    return Export(splits, list(colors), table, digest.hexdigest(), colors=colors, notes=notes)
