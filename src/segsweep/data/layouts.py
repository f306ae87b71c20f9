"""Public datasets as their users unpack them: how images and masks pair, which lists are the splits, the classes.

``data=cityscapes|ade20k|voc|camvid|nnunet`` are presets of ``data=folder``; each names one layout here, which also
says which raw mask values are which class (a lookup table).

A layout lists the pairs of each split it has (``train``, and ``val``/``test`` where the dataset labels them) and the
classes from its preset (a ``classes.yaml`` in ``data.root`` still wins). Nothing here opens an image: listing only,
with one line naming what was expected and where when the folder is not the dataset's. An annotation tool's export
(``data=coco|labelme|cvat_mask``, ``EXPORTS``) is a layout too, whose masks data/annotations.py draws into the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segsweep.data import annotations, coco, cvat_mask, labelme, nnunet
from segsweep.data.annotations import AnnotationOptions, Export
from segsweep.data.folder_classes import CLASSES_FILE, FolderClasses, FolderDataError, load_classes, preset_classes
from segsweep.data.folder_files import Pair
from segsweep.data.public_classes import (
    ADE20K_COLORS,
    ADE20K_NAMES,
    CAMVID_COLORS,
    CAMVID_NAMES,
    CAMVID_VOID,
    CITYSCAPES_COLORS,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_NAMES,
    CITYSCAPES_TRAIN_IDS,
    VOC_NAMES,
    voc_colors,
)

log = logging.getLogger(__name__)

IGNORE = 255


@dataclass(frozen=True)
class Layout:
    """A dataset's listed splits (``train``; ``val``, ``test`` where it labels them), classes, and what to log once."""

    splits: dict[str, list[Pair]]
    spec: FolderClasses
    notes: list[str] = field(default_factory=list)


def _require(folder: Path, root: Path, holds: str) -> None:
    if not folder.is_dir():
        raise FolderDataError(f"no {folder.relative_to(root)} under {root}: is data.root the folder that holds {holds}?")


def _pair(root: Path, image: Path, mask: Path) -> Pair:
    if not mask.is_file():
        raise FolderDataError(f"{image}: image without its mask (expected {mask})")
    return Pair(image, mask, str(image.relative_to(root)))


def cityscapes(root: Path, sbd: bool) -> Layout:
    """``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<stem>_gtFine_*.png``."""
    holds = "leftImg8bit/ and gtFine/"
    _require(root / "leftImg8bit" / "train", root, holds)
    _require(root / "gtFine" / "train", root, holds)
    images = {
        split: sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        for split in ("train", "val")
        if (root / "leftImg8bit" / split).is_dir()
    }
    if not images["train"]:
        raise FolderDataError(f"{root / 'leftImg8bit' / 'train'}: no <city>/<stem>_leftImg8bit.png images")

    def mask(image: Path, split: str, kind: str) -> Path:
        stem = image.name.removesuffix("_leftImg8bit.png")
        return root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_{kind}.png"

    # cityscapesScripts' createTrainIdLabelImgs writes *_labelTrainIds.png beside every mask; without it, map labelIds
    train_ids = all(mask(image, split, "labelTrainIds").is_file() for split, found in images.items() for image in found)
    kind = "labelTrainIds" if train_ids else "labelIds"
    splits = {split: [_pair(root, image, mask(image, split, kind)) for image in found] for split, found in images.items()}
    ids = {label_id: IGNORE for label_id in range(CITYSCAPES_LABEL_IDS)} | {IGNORE: IGNORE}
    ids.update({label_id: index for index, label_id in enumerate(CITYSCAPES_TRAIN_IDS)})
    spec = preset_classes("cityscapes", CITYSCAPES_NAMES, CITYSCAPES_COLORS, None if train_ids else ids)
    notes = [
        f"{root}: Cityscapes masks *_gtFine_{kind}.png"
        + ("" if train_ids else " (34 label ids, the 19 evaluated ones mapped to train ids 0..18, the rest void)"),
        f"{root}: Cityscapes' public test labels are placeholders: the test stage uses the val split",
    ]
    return Layout(splits, spec, notes)


def ade20k(root: Path, sbd: bool) -> Layout:
    """``images/{training,validation}/<stem>.jpg`` with ``annotations/.../<stem>.png``; 0 ("other") void, k -> k - 1."""
    holds = "images/ and annotations/ (ADEChallengeData2016)"
    splits = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        if split == "train" or (root / "images" / folder).is_dir():
            _require(root / "images" / folder, root, holds)
            annotations = root / "annotations" / folder
            splits[split] = [_pair(root, image, annotations / f"{image.stem}.png") for image in _images(root / "images" / folder)]
    mapping = {0: IGNORE} | {value: value - 1 for value in range(1, len(ADE20K_NAMES) + 1)}
    spec = preset_classes("ade20k", ADE20K_NAMES, ADE20K_COLORS, mapping)
    notes = [f"{root}: ADE20K annotations: 0 (other) is void, 1..150 are classes 0..149; the test stage uses validation"]
    return Layout(splits, spec, notes)


def _images(folder: Path) -> list[Path]:
    found = sorted(path for path in folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        raise FolderDataError(f"{folder}: no images")
    return found


def _listed(root: Path, listing: Path, images: Path, masks: Path) -> list[Pair]:
    """The pairs of a VOC split list, one stem a line; a stem whose image or mask is missing is one line naming both."""
    pairs = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        stem = line.strip()
        if not stem:
            continue
        image, mask = images / f"{stem}.jpg", masks / f"{stem}.png"
        for path in (image, mask):
            if not path.is_file():
                raise FolderDataError(f"{listing}:{number}: lists {stem}, but {path} is missing")
        pairs.append(Pair(image, mask, str(image.relative_to(root))))
    if not pairs:
        raise FolderDataError(f"{listing}: lists no images")
    return pairs


def voc(root: Path, sbd: bool) -> Layout:
    """The stems of ``ImageSets/Segmentation/{train,val}.txt``: ``JPEGImages/<stem>.jpg``, ``SegmentationClass/<stem>.png``
    (palette indices are the classes, 255 borders); ``data.sbd``: train on ``trainaug.txt`` with ``SegmentationClassAug/``."""
    lists = root / "ImageSets" / "Segmentation"
    holds = "JPEGImages/, SegmentationClass/ and ImageSets/ (VOCdevkit/VOC2012)"
    for folder in (root / "JPEGImages", root / "SegmentationClass", lists):
        _require(folder, root, holds)
    for name in ("train.txt", "val.txt"):
        if not (lists / name).is_file():
            raise FolderDataError(f"no {lists / name}: VOC's split lists are ImageSets/Segmentation/train.txt and val.txt")
    notes = [f"{root}: VOC 2012 splits from ImageSets/Segmentation; the test stage uses val"]
    if sbd:
        aug, listing = root / "SegmentationClassAug", lists / "trainaug.txt"
        if not aug.is_dir() or not listing.is_file():
            missing = aug if not aug.is_dir() else listing
            raise FolderDataError(
                f"data.sbd=true: no {missing} (unpack SBD's SegmentationClassAug/ and trainaug.txt into {root})"
            )
        train = _listed(root, listing, root / "JPEGImages", aug)
        notes.append(f"{root}: data.sbd=true, training on the {len(train)} images of trainaug.txt (SBD)")
    else:
        train = _listed(root, lists / "train.txt", root / "JPEGImages", root / "SegmentationClass")
    val = _listed(root, lists / "val.txt", root / "JPEGImages", root / "SegmentationClass")
    spec = preset_classes("voc", VOC_NAMES, voc_colors(), None)
    return Layout({"train": train, "val": val}, spec, notes)


def camvid(root: Path, sbd: bool) -> Layout:
    """SegNet's CamVid: ``<split>/<name>.png`` with ``<split>annot/<name>.png``; 0..10 the classes, 11 void."""
    splits = {}
    for split in ("train", "val", "test"):
        if split == "train" or (root / split).is_dir():
            for folder in (root / split, root / f"{split}annot"):
                _require(folder, root, "train/ trainannot/ val/ valannot/ test/ testannot/ (SegNet's CamVid)")
            splits[split] = [_pair(root, image, root / f"{split}annot" / image.name) for image in _images(root / split)]
    mapping = {value: value for value in range(len(CAMVID_NAMES))} | {CAMVID_VOID: IGNORE}
    return Layout(splits, preset_classes("camvid", CAMVID_NAMES, CAMVID_COLORS, mapping), [f"{root}: CamVid, 11 is void"])


def nnunet_raw(root: Path, sbd: bool) -> Layout:
    """An nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``): data/nnunet.py."""
    spec, train, notes = nnunet.read(root)
    return Layout({"train": train}, spec, notes)


LAYOUTS: dict[str, Callable[[Path, bool], Layout]] = {
    "cityscapes": cityscapes,
    "ade20k": ade20k,
    "voc": voc,
    "camvid": camvid,
    "nnunet": nnunet_raw,
}


# annotation tools' exports (data/annotations.py): their masks are drawn into the cache
EXPORTS: dict[str, Callable[[Path, AnnotationOptions], Export]] = {
    "coco": coco.read,
    "labelme": labelme.read,
    "cvat_mask": cvat_mask.read,
}


def resolve(name: str, root: Path, sbd: bool = False, options: AnnotationOptions | None = None) -> Layout:
    """The layout ``name`` of the dataset at ``root``; bad layout is one line naming what was expected and where."""
    if name not in LAYOUTS and name not in EXPORTS:
        choices = ", ".join([*LAYOUTS, *EXPORTS])
        raise ValueError(f"data.layout must be one of {choices} (or null: data=folder's own), got {name!r}")
    if sbd and name != "voc":
        raise ValueError(f"data.sbd=true: SBD augments Pascal VOC only (data=voc), not data.layout={name}")
    if not root.is_dir():
        raise FolderDataError(f"data.root={root}: no such directory")
    if name in EXPORTS:
        export = EXPORTS[name](root, options or AnnotationOptions())
        splits, spec = annotations.layout(name, root, export, options or AnnotationOptions())
        tests = [] if "test" in splits else [f"{root}: the export has no test split: the test stage uses the val split"]
        return Layout(splits, spec, export.notes + tests)
    layout = LAYOUTS[name](root, sbd)
    if (root / CLASSES_FILE).is_file():
        log.info("%s: its classes.yaml replaces the %s preset's classes", root / CLASSES_FILE, name)
        return Layout(layout.splits, load_classes(root), layout.notes)
    return layout
