"""Labelme exports (data=labelme): a JSON beside each image, its shapes drawn as Labelme's own labelme2voc draws them.

Shapes: ``polygon`` (3 points or more), ``rectangle`` (2 corners), ``circle`` (its centre and a point on it), ``line``
and ``linestrip`` (drawn ``data.line_width`` pixels wide, Labelme's 10), ``mask`` (a base64 PNG of the box between its
2 points); ``point`` and ``points`` cover no area and are skipped. Labels are classes by name, sorted (or in the order
of ``data.classes``), background 0. Splits: the ``train/``, ``val/`` and ``test/`` subfolders of data.root when it has
``train/``, else every JSON under data.root is train, validated on ``data.val_fraction`` or a fold (``data.folds``).

Bad input is one line naming the JSON: a shape with too few points, a shape type Labelme does not write, an imagePath
that names no file; an image without its JSON is one line naming the image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from segsweep.data.annotations import AnnotationOptions, Export, Item, Region, relative_name
from segsweep.data.folder_classes import FolderDataError
from segsweep.data.images import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")
# shape type -> the fewest points it takes (and the most, where fixed)
POINTS = {"polygon": (3, None), "rectangle": (2, 2), "circle": (2, 2), "line": (2, 2), "linestrip": (2, None), "mask": (2, 2)}
SKIPPED = ("point", "points")


def _shape(shape: Any, index: int, path: Path) -> dict[str, Any] | None:
    """A checked shape, or None for one that covers no area (a point)."""
    if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not isinstance(shape.get("points"), list):
        raise FolderDataError(f"{path}: shapes[{index}] needs a label and points")
    kind = shape.get("shape_type") or "polygon"
    if kind in SKIPPED:
        return None
    if kind not in POINTS:
        raise FolderDataError(
            f"{path}: shapes[{index}] ({shape['label']}): shape type {kind!r} (segsweep draws {', '.join(POINTS)})"
        )
    points = shape["points"]
    if not all(isinstance(point, list) and len(point) == 2 for point in points):
        raise FolderDataError(f"{path}: shapes[{index}] ({shape['label']}): points must be [x, y] pairs")
    fewest, most = POINTS[kind]
    if len(points) < fewest or (most is not None and len(points) > most):
        if kind == "polygon":
            raise FolderDataError(
                f"{path}: shapes[{index}] ({shape['label']}): a polygon with fewer than 3 points ({len(points)})"
            )
        expected = f"{fewest}" if most == fewest else f"at least {fewest}"
        raise FolderDataError(f"{path}: shapes[{index}] ({shape['label']}): a {kind} takes {expected} points, got {len(points)}")
    if kind == "mask" and not isinstance(shape.get("mask"), str):
        raise FolderDataError(f"{path}: shapes[{index}] ({shape['label']}): a mask shape without its base64 `mask`")
    return {"label": shape["label"], "kind": kind, "points": [(float(x), float(y)) for x, y in points], "mask": shape.get("mask")}


def _mask(shape: dict[str, Any], height: int, width: int, line_width: int, path: Path) -> np.ndarray:
    """bool [H, W]: one shape's pixels, drawn as Labelme's shape_to_mask does (PIL), a mask shape pasted in its box."""
    if shape["kind"] == "mask":
        try:
            with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as image:
                crop = np.asarray(image.convert("L")) > 0
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
            raise FolderDataError(f"{path}: shape {shape['label']}: its `mask` is not a base64 image") from None
        (x1, y1), (x2, y2) = (tuple(int(value) for value in point) for point in shape["points"])
        pixels = np.zeros((height, width), dtype=bool)
        box = pixels[y1 : y2 + 1, x1 : x2 + 1]
        if box.shape != crop.shape:
            raise FolderDataError(
                f"{path}: shape {shape['label']}: its mask is {crop.shape[1]}x{crop.shape[0]}, "
                f"its box in the image {box.shape[1]}x{box.shape[0]}"
            )
        box[...] = crop
        return pixels
    canvas = Image.new("L", (width, height), 0)
    draw, points = ImageDraw.Draw(canvas), shape["points"]
    if shape["kind"] == "circle":
        (cx, cy), (px, py) = points
        radius = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=1, fill=1)
    elif shape["kind"] == "rectangle":
        (x1, y1), (x2, y2) = points
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=1, fill=1)
    elif shape["kind"] in ("line", "linestrip"):
        draw.line(points, fill=1, width=line_width)
    else:
        draw.polygon(points, outline=1, fill=1)
    return np.asarray(canvas) > 0


def _regions(shapes: list[dict[str, Any]], line_width: int, path: Path) -> Callable[[int, int], list[Region]]:
    def regions(height: int, width: int) -> list[Region]:
        return [(shape["label"], _mask(shape, height, width, line_width, path)) for shape in shapes]

    return regions


def _read(path: Path, root: Path, options: AnnotationOptions) -> tuple[Item, set[str], bytes]:
    """One JSON: its image's item, its labels, its bytes."""
    content = path.read_bytes()
    try:
        data = json.loads(content)
    except ValueError as error:
        raise FolderDataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or not isinstance(data.get("imagePath"), str):
        raise FolderDataError(f"{path}: not a Labelme file (a JSON object with `shapes` and `imagePath`)")
    image = path.parent / data["imagePath"].replace("\\", "/")  # Labelme on Windows writes backslashes
    if not image.is_file():
        raise FolderDataError(f"{path}: imagePath {data['imagePath']!r} names no file (expected {image})")
    shapes = [checked for index, shape in enumerate(data["shapes"]) if (checked := _shape(shape, index, path)) is not None]
    height, width = data.get("imageHeight"), data.get("imageWidth")
    size = (int(height), int(width)) if isinstance(height, int) and isinstance(width, int) else None
    item = Item(image, relative_name(image, root, path), path, size, _regions(shapes, options.line_width, path))
    return item, {shape["label"] for shape in shapes}, content


def _folder(folder: Path, root: Path, options: AnnotationOptions) -> tuple[list[Item], set[str], list[bytes]]:
    """Every JSON under ``folder`` (sorted), and a check that every image under it has one."""
    files = sorted(path for path in folder.rglob("*.json") if not any(part.startswith(".") for part in path.parts))
    if not files:
        raise FolderDataError(f"{folder}: no Labelme JSON files (<image name>.json beside each image)")
    items, labels, contents = [], set(), []
    for path in files:
        item, found, content = _read(path, root, options)
        items.append(item)
        labels |= found
        contents.append(f"{path}\n".encode() + content)
    named = {item.image.resolve(): item.source for item in items}
    if len(named) < len(items):
        twice = next(item for item in items if sum(other.image.resolve() == item.image.resolve() for other in items) > 1)
        raise FolderDataError(f"{twice.source}: its image {twice.image.name} is labelled by another JSON, too")
    for image in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in image.relative_to(folder).parts)
        if image.suffix.lower() in IMAGE_SUFFIXES and not hidden and image.is_file() and image.resolve() not in named:
            raise FolderDataError(f"{image}: image without its Labelme JSON (expected {image.with_suffix('.json')})")
    return items, labels, contents


def read(root: Path, options: AnnotationOptions) -> Export:
    """The export at ``root``: its splits (subfolders, else all of it is train), its labels sorted, their digest."""
    if not root.is_dir():
        raise FolderDataError(f"data.root={root}: no such directory")
    folders = (
        {split: root / split for split in SPLITS if (root / split).is_dir()} if (root / "train").is_dir() else {"train": root}
    )
    splits, labels, digest = {}, set(), hashlib.sha256()
    for split, folder in folders.items():
        splits[split], found, contents = _folder(folder, root, options)
        labels |= found
        for content in contents:
            digest.update(hashlib.sha256(content).digest())
    counts = ", ".join(f"{split} {len(items)}" for split, items in splits.items())
    notes = [f"{root}: Labelme export ({counts} images), labels {', '.join(sorted(labels))}; overlaps: the smaller on top"]
    return Export(splits, sorted(labels), root, digest.hexdigest(), notes=notes)
