"""COCO JSON exports (CVAT, Roboflow; data=coco): images, categories, polygon and RLE annotations drawn by pycocotools.

Where the files are: ``data.coco_annotations`` and ``data.coco_images``, paths under data.root in which ``{split}``
stands for a split's folder name. Roboflow's layout is the default (``{split}/_annotations.coco.json`` beside the
images in ``{split}``: train/ valid/ test/); COCO 2017's is ``annotations/instances_{split}2017.json`` with
``{split}2017``; CVAT's COCO 1.0 is ``annotations/instances_{split}.json`` with its images. ``{split}`` is ``train`` or
``default`` (CVAT's subset) for the train split, ``valid`` or ``val`` for val, ``test``: whichever exists. A path
without ``{split}`` is one file, the train split (validated on data.val_fraction or a fold).

Roboflow's placeholder super-category (a category whose supercategory is ``none`` and the supercategory of all the
others) is not a class. Crowd annotations (RLE) are regions of their category like any other. An image without
annotations is background. Bad input is one line naming the JSON file: a polygon of fewer than 3 points, a category
or image id nothing defines, an image the JSON names that the folder lacks, and an image in the folder no JSON names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segsweep.data.annotations import AnnotationOptions, Export, Item, Region, relative_name
from segsweep.data.folder_classes import FolderDataError
from segsweep.data.images import IMAGE_SUFFIXES

SPLIT = "{split}"
FOLDER_NAMES = {"train": ("train", "default"), "val": ("valid", "val"), "test": ("test",)}  # default: CVAT's subset


def _mask_api() -> Any:
    try:
        from pycocotools import mask
    except ImportError:
        raise FolderDataError(
            "data=coco draws COCO polygons and RLE with pycocotools: pip install segsweep[annotations]"
        ) from None
    return mask


def _files(root: Path, options: AnnotationOptions) -> dict[str, tuple[Path, Path]]:
    """(annotation file, image folder) of each split the export has."""
    annotations, images = options.coco_annotations, options.coco_images
    if SPLIT not in annotations:
        found = {"train": (root / annotations, root / images)}
    else:
        found = {}
        for split, names in FOLDER_NAMES.items():
            for name in names:
                path = root / annotations.replace(SPLIT, name)
                if path.is_file():
                    found[split] = (path, root / images.replace(SPLIT, name))
                    break
    train = root / annotations.replace(SPLIT, "train")
    if "train" not in found or not found["train"][0].is_file():
        raise FolderDataError(
            f"no {train.relative_to(root) if train.is_relative_to(root) else train} under {root}: is data.root a COCO export "
            f"(data.coco_annotations={annotations}, data.coco_images={images})?"
        )
    return found


def _load(path: Path) -> tuple[dict[str, Any], bytes]:
    content = path.read_bytes()
    try:
        data = json.loads(content)
    except ValueError as error:
        raise FolderDataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("images", "categories")):
        raise FolderDataError(f"{path}: not a COCO file (a JSON object with `images`, `annotations` and `categories` lists)")
    return data, content


def _entries(data: dict[str, Any], key: str, fields: tuple[str, ...], path: Path) -> list[dict[str, Any]]:
    entries = data.get(key) or []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(name not in entry for name in fields):
            raise FolderDataError(f"{path}: {key}[{index}] needs {', '.join(fields)}")
    return entries


def _categories(data: dict[str, Any], path: Path) -> dict[int, str]:
    """Category id -> name, without Roboflow's placeholder super-category."""
    categories = _entries(data, "categories", ("id", "name"), path)
    placeholders = [
        category
        for category in categories
        if category.get("supercategory") == "none"
        and len(categories) > 1
        and all(other.get("supercategory") == category["name"] for other in categories if other is not category)
    ]
    return {int(category["id"]): str(category["name"]) for category in categories if category not in placeholders}


def _regions(annotations: list[dict[str, Any]], categories: dict[int, str], mask_api: Any) -> Callable[[int, int], list[Region]]:
    """The regions of one image's annotations, decoded when called (with its height and width)."""

    def regions(height: int, width: int) -> list[Region]:
        found = []
        for annotation in annotations:
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, list):
                rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation["counts"], list):
                rle = mask_api.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            pixels = mask_api.decode(rle).astype(bool)
            found.append((categories.get(int(annotation["category_id"]), ""), pixels))
        return found

    return regions


def _check(annotation: dict[str, Any], image: dict[str, Any], defined: set[int], path: Path) -> None:
    """One annotation's category and segmentation, before anything is drawn."""
    where = f"{path}: annotation {annotation.get('id')} ({image['file_name']})"
    if int(annotation["category_id"]) not in defined:
        raise FolderDataError(f"{where}: category id {annotation['category_id']}, which no category defines")
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                count = len(polygon) // 2 if isinstance(polygon, list) else 0
                raise FolderDataError(f"{where}: a polygon with fewer than 3 points ({count})")
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [image["height"], image["width"]]:
            raise FolderDataError(
                f"{where}: RLE of size {segmentation.get('size')}, but the image is {image['height']}x{image['width']}"
            )
    else:
        raise FolderDataError(f"{where}: no segmentation (polygons or RLE); a box-only (detection) export has no masks")


def _split(root: Path, path: Path, folder: Path, mask_api: Any, ids: dict[int, str]) -> tuple[list[Item], bytes]:
    """One split's images (in the JSON's order) with their annotations; its category ids merged into ``ids``."""
    data, content = _load(path)
    images = _entries(data, "images", ("id", "file_name", "height", "width"), path)
    defined = _categories(data, path)
    every = {int(category["id"]) for category in data["categories"] if isinstance(category, dict) and "id" in category}
    by_id: dict[int, dict[str, Any]] = {}
    for image in images:
        if int(image["id"]) in by_id:
            raise FolderDataError(f"{path}: image id {image['id']} is given twice")
        by_id[int(image["id"])] = image
    annotations: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in by_id}
    for annotation in _entries(data, "annotations", ("image_id", "category_id"), path):
        image = by_id.get(int(annotation["image_id"]))
        if image is None:
            raise FolderDataError(
                f"{path}: annotation {annotation.get('id')} names image id {annotation['image_id']}, which no image defines"
            )
        _check(annotation, image, every, path)
        annotations[int(image["id"])].append(annotation)
    items, named = [], set()
    for image_id, image in by_id.items():
        file = folder / str(image["file_name"])
        if not file.is_file():
            raise FolderDataError(f"{path}: names image {image['file_name']}, missing from {folder}")
        if file in named:
            raise FolderDataError(f"{path}: names image {image['file_name']} twice")
        named.add(file)
        size = (int(image["height"]), int(image["width"]))
        regions = _regions(annotations[image_id], defined, mask_api)
        items.append(Item(file, relative_name(file, root, path), path, size, regions))
    for directory in sorted({file.parent for file in named}):
        for file in sorted(directory.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES and file not in named and not file.name.startswith("."):
                raise FolderDataError(f"{file}: an image {path.name} does not name ({path})")
    ids.update(defined)
    return items, content


def read(root: Path, options: AnnotationOptions) -> Export:
    """The export at ``root``: its splits, its categories (in id order, by name), the digest of its JSON files."""
    mask_api = _mask_api()
    digest, ids, splits = hashlib.sha256(), {}, {}
    files = _files(root, options)
    for split, (path, folder) in files.items():
        splits[split], content = _split(root, path, folder, mask_api, ids)
        digest.update(f"{path}\n".encode() + hashlib.sha256(content).digest())
    categories = [ids[category_id] for category_id in sorted(ids)]
    counts = ", ".join(f"{split} {len(items)}" for split, items in splits.items())
    notes = [f"{root}: COCO export ({counts} images), {len(set(categories))} categories; overlaps: the smaller on top"]
    return Export(splits, categories, files["train"][0], digest.hexdigest(), notes=notes)
