"""Tiny replicas of the public datasets in their own layouts (file names, extra files, raw label values), for the tests.

Each writer returns the data.root a user would pass and the number of scored (non-void) pixels of the split the
test stage should use, so a test can tell which labels were scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segsweep.data.public_classes import voc_colors

from .folders import image_for

HEIGHT, WIDTH = 32, 48


def layout_mask(seed: int, values: tuple[int, int, int], void: int) -> np.ndarray:
    """Raw values: ``values[0]`` on top, ``values[1]`` below, a ``values[2]`` box, a ``void`` stripe at the left."""
    rng = np.random.default_rng(seed)
    mask = np.full((HEIGHT, WIDTH), values[0], dtype=np.uint8)
    horizon = int(rng.integers(HEIGHT // 3, HEIGHT // 2))
    mask[horizon:] = values[1]
    top, left = int(rng.integers(horizon, HEIGHT - 8)), int(rng.integers(4, WIDTH - 12))
    mask[top : top + 8, left : left + 10] = values[2]
    mask[:, :2] = void
    return mask


def _image(path: Path, mask: np.ndarray, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(mask % 3, seed)).save(path)  # colours follow the raw values


def _mask(path: Path, values: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values, mode="P" if palette else "L")
    if palette:
        image.putpalette(palette)
    image.save(path)


def cityscapes(base: Path, train_ids: bool = False) -> tuple[Path, int]:
    """leftImg8bit/ and gtFine/ with *_labelIds (or *_labelTrainIds), _color, _instanceIds, _polygons.json; the test
    split's labels are placeholders (all road) that must never be scored."""
    root, scored = base / "cityscapes", 0
    for offset, (split, city, count) in enumerate((("train", "aachen", 6), ("val", "frankfurt", 2), ("test", "berlin", 2))):
        for index in range(count):
            stem, seed = f"{city}_{index:06d}_000019", 10 * offset + index
            # road 7, car 26 (train ids 0, 13); sky 23 (10); ego vehicle 1 void
            ids = layout_mask(seed, (23, 7, 26), 1) if split != "test" else np.full((HEIGHT, WIDTH), 7, np.uint8)
            _image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", ids, seed)
            gt = root / "gtFine" / split / city
            _mask(gt / f"{stem}_gtFine_labelIds.png", ids)
            if train_ids:
                trainids = np.select([ids == 7, ids == 23, ids == 26], [0, 10, 13], default=255).astype(np.uint8)
                _mask(gt / f"{stem}_gtFine_labelTrainIds.png", trainids)
            Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(gt / f"{stem}_gtFine_color.png")
            Image.fromarray(ids.astype(np.uint16) * 1000).save(gt / f"{stem}_gtFine_instanceIds.png")
            (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": HEIGHT, "objects": []}))
            scored += int((ids != 1).sum()) if split == "val" else 0
    return root, scored


def ade20k(base: Path) -> tuple[Path, int]:
    """ADEChallengeData2016: images/ and annotations/ {training,validation}, 0 = other (void), plus its index files."""
    root, scored = base / "ADEChallengeData2016", 0
    for split, prefix, count in (("training", "ADE_train", 6), ("validation", "ADE_val", 2)):
        for index in range(count):
            stem = f"{prefix}_{index + 1:08d}"
            values = layout_mask(index, (3, 7, 150), 0)  # sky, road, flag; 0 other
            _image(root / "images" / split / f"{stem}.jpg", values, index)
            _mask(root / "annotations" / split / f"{stem}.png", values)
            scored += int((values != 0).sum()) if split == "validation" else 0
    (root / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    (root / "sceneCategories.txt").write_text("ADE_train_00000001 airport_terminal\n")
    return root, scored


def voc(base: Path, sbd: bool = False) -> tuple[Path, int]:
    """VOCdevkit/VOC2012: split lists, palette PNGs (255 borders), detection-only JPEGs in no list; optionally SBD."""
    root, scored = base / "VOCdevkit" / "VOC2012", 0
    palette = [channel for color in voc_colors(256) for channel in color]
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    stems = {"train": [f"2007_{i:06d}" for i in range(6)], "val": [f"2008_{i:06d}" for i in range(2)]}
    for split, names in stems.items():
        for index, stem in enumerate(names):
            values = layout_mask(index + 10 * (split == "val"), (0, 15, 7), 255)  # background, person, car; borders
            _image(root / "JPEGImages" / f"{stem}.jpg", values, index)
            _mask(root / "SegmentationClass" / f"{stem}.png", values, palette)
            _mask(root / "SegmentationObject" / f"{stem}.png", (values > 0).astype(np.uint8), palette)
            scored += int((values != 255).sum()) if split == "val" else 0
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    (lists / "trainval.txt").write_text("\n".join(stems["train"] + stems["val"]) + "\n")
    for index in range(3):  # detection-only images: in no segmentation list
        _image(root / "JPEGImages" / f"2009_{index:06d}.jpg", layout_mask(index, (0, 1, 2), 0), index)
    if sbd:
        aug = [f"2010_{i:06d}" for i in range(4)] + stems["train"]
        for index, stem in enumerate(aug):
            values = layout_mask(20 + index, (0, 12, 7), 255)
            if not (root / "JPEGImages" / f"{stem}.jpg").is_file():
                _image(root / "JPEGImages" / f"{stem}.jpg", values, index)
            _mask(root / "SegmentationClassAug" / f"{stem}.png", values)
        (lists / "trainaug.txt").write_text("\n".join(aug) + "\n")
    return root, scored


def camvid(base: Path) -> tuple[Path, int]:
    """SegNet's CamVid: train/ trainannot/ val/ valannot/ test/ testannot/, same file names; 11 unlabelled."""
    root, scored = base / "CamVid", 0
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for index in range(count):
            name = f"0001TP_{6690 + 30 * index:06d}.png"
            values = layout_mask(index + 7 * len(split), (0, 3, 8), 11)  # sky, road, car; 11 void
            _image(root / split / name, values, index)
            _mask(root / f"{split}annot" / name, values)
            scored += int((values != 11).sum()) if split == "test" else 0
    (root / "train.txt").write_text("SegNet's own list, not read\n")
    return root, scored


def nnunet(base: Path, channels: int = 1, cases: int = 10) -> tuple[Path, int]:
    """Dataset001_Tiny: dataset.json, imagesTr/<case>_0000.png (one greyscale channel, or three files), labelsTr/,
    imagesTs/ without labels."""
    root = base / "Dataset001_Tiny"
    names = {str(index): name for index, name in enumerate(["R", "G", "B"][:channels] if channels == 3 else ["MRI"])}
    labels = {"background": 0, "tumour": 1, "edema": 2}
    (root / "imagesTr").mkdir(parents=True)
    dataset = {"channel_names": names, "labels": labels, "numTraining": cases, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(dataset))
    for index in range(cases + 2):
        case, values = f"tiny_{index:03d}", layout_mask(index, (0, 1, 2), 0)
        folder = "imagesTr" if index < cases else "imagesTs"
        grey = image_for(values, index)[..., 0]
        for channel in range(channels):
            (root / folder).mkdir(exist_ok=True)
            Image.fromarray(np.roll(grey, channel, axis=1)).save(root / folder / f"{case}_{channel:04d}.png")
        if index < cases:
            _mask(root / "labelsTr" / f"{case}.png", values)
    return root, 0
