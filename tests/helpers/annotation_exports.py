"""Tiny exports of the annotation tools in their own file formats (Roboflow COCO, Labelme, CVAT segmentation masks).

Each writer returns the data.root a user would pass and the number of pixels of the split the test stage uses, as the
public dataset replicas do (tests/helpers/public_datasets.py): every pixel is scored (no void) unless a test says so.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .folders import image_for

HEIGHT, WIDTH = 48, 64
SPLITS = {"train": 5, "val": 2, "test": 2}
CVAT_COLORS = {"background": (0, 0, 0), "road": (128, 64, 128), "car": (0, 0, 142), "sign": (220, 220, 0)}


def scene(seed: int) -> dict[str, list[float]]:
    """A road below a horizon, a car box on it, and a sign box (odd seeds only): corners x1, y1, x2, y2 (inclusive)."""
    rng = np.random.default_rng(seed)
    horizon = int(rng.integers(16, 24))
    top, left = int(rng.integers(horizon + 2, HEIGHT - 12)), int(rng.integers(2, WIDTH - 20))
    boxes = {"road": [0, horizon, WIDTH - 1, HEIGHT - 1], "car": [left, top, left + 15, top + 9]}
    if seed % 2:
        boxes["sign"] = [48, 4, 53, 11]
    return boxes


def truth(boxes: dict[str, list[float]], order: tuple[str, ...] = ("background", "road", "car", "sign")) -> np.ndarray:
    """The class mask the boxes mean, smaller on top (road < car < sign in area order), classes by ``order``."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for name in ("road", "car", "sign"):
        if name in boxes:
            x1, y1, x2, y2 = (int(value) for value in boxes[name])
            mask[y1 : y2 + 1, x1 : x2 + 1] = order.index(name)
    return mask


def _image(path: Path, boxes: dict[str, list[float]], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(truth(boxes) % 3, seed)).save(path)


def _polygon(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 + 1, y1, x2 + 1, y2 + 1, x1, y2 + 1]  # pixel edges: pycocotools fills the area inside


def uncompressed_rle(pixels: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask: run lengths in column-major order, starting with a run of zeros."""
    counts, inside, run = [], False, 0
    for value in pixels.flatten(order="F").tolist():
        if value != inside:
            counts.append(run)
            inside, run = value, 0
        run += 1
    counts.append(run)
    return {"size": [int(pixels.shape[0]), int(pixels.shape[1])], "counts": counts}


def coco(base: Path) -> tuple[Path, int]:
    """Roboflow's COCO Segmentation export: train/ valid/ test/, each with _annotations.coco.json beside its images,
    its placeholder super-category (id 0), the car as a polygon, the sign as a crowd RLE, and an unlabelled image."""
    root = base / "roboflow"
    categories = [{"id": 0, "name": "street", "supercategory": "none"}] + [
        {"id": index, "name": name, "supercategory": "street"} for index, name in enumerate(("road", "car", "sign"), start=1)
    ]
    for offset, (split, count) in enumerate(SPLITS.items()):
        folder = root / ("valid" if split == "val" else split)
        images, annotations = [], []
        for index in range(count + 1):  # the last image has no annotations: background
            seed = 10 * offset + index
            boxes = scene(seed) if index < count else {}
            name = f"img{index}_jpg.rf.{seed:04x}.png"
            _image(folder / name, boxes, seed)
            images.append({"id": index, "file_name": name, "height": HEIGHT, "width": WIDTH})
            for category in categories[1:]:
                if category["name"] not in boxes:
                    continue
                box = boxes[category["name"]]
                if category["name"] == "sign":
                    segmentation, crowd = uncompressed_rle(truth({"sign": box}) > 0), 1
                else:
                    segmentation, crowd = [_polygon(box)], 0
                annotation = {"id": len(annotations), "image_id": index, "category_id": category["id"], "iscrowd": crowd}
                annotations.append(annotation | {"segmentation": segmentation, "bbox": box, "area": 1})
        document = {"info": {}, "images": images, "annotations": annotations, "categories": categories}
        (folder / "_annotations.coco.json").write_text(json.dumps(document))
    return root, (SPLITS["test"] + 1) * HEIGHT * WIDTH


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def labelme_json(image_name: str, boxes: dict[str, list[float]]) -> dict:
    """Labelme 5's file for one image: the road as a polygon, the car as a rectangle, the sign as a mask shape."""
    shapes = []
    for label, box in boxes.items():
        x1, y1, x2, y2 = box
        if label == "road":
            shape = {"points": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]], "shape_type": "polygon"}
        elif label == "car":
            shape = {"points": [[x1, y1], [x2, y2]], "shape_type": "rectangle"}
        else:
            crop = np.ones((y2 - y1 + 1, x2 - x1 + 1), dtype=bool)
            shape = {"points": [[x1, y1], [x2, y2]], "shape_type": "mask", "mask": _png_base64(crop)}
        shapes.append({"label": label, "group_id": None, "description": "", "flags": {}, **shape})
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
    }


def labelme(base: Path) -> tuple[Path, int]:
    """A Labelme folder with train/ val/ test/ subfolders, a JSON beside each image."""
    root = base / "labelme"
    for offset, (split, count) in enumerate(SPLITS.items()):
        for index in range(count):
            seed, name = 10 * offset + index, f"photo_{offset}{index}.jpg"
            boxes = scene(seed)
            _image(root / split / name, boxes, seed)
            (root / split / f"photo_{offset}{index}.json").write_text(json.dumps(labelme_json(name, boxes), indent=2))
    return root, SPLITS["test"] * HEIGHT * WIDTH


def cvat_mask(base: Path) -> tuple[Path, int]:
    """CVAT's Segmentation mask 1.1 with Save images: labelmap.txt, ImageSets/Segmentation/{train,val,test}.txt,
    SegmentationClass/ colour PNGs, SegmentationObject/ (not read) and JPEGImages/."""
    root = base / "cvat"
    lines = ["# label:color_rgb:parts:actions"] + [f"{name}:{r},{g},{b}::" for name, (r, g, b) in CVAT_COLORS.items()]
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    palette = np.array(list(CVAT_COLORS.values()), dtype=np.uint8)
    for offset, (split, count) in enumerate(SPLITS.items()):
        stems = []
        for index in range(count):
            seed, stem = 10 * offset + index, f"frame_{offset:02d}{index:04d}"
            boxes = scene(seed)
            _image(root / "JPEGImages" / f"{stem}.png", boxes, seed)
            for folder in ("SegmentationClass", "SegmentationObject"):
                (root / folder).mkdir(exist_ok=True)
                Image.fromarray(palette[truth(boxes)]).save(root / folder / f"{stem}.png")
            stems.append(stem)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root, SPLITS["test"] * HEIGHT * WIDTH
