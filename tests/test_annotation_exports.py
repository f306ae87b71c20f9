"""Annotation tools' exports (data=coco|labelme|cvat_mask): read in their own file formats, trained, evaluated, predicted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segsweep.data.folder import FolderDataModule
from segsweep.data.folder_classes import FolderDataError

from .helpers import annotation_exports
from .helpers.annotation_exports import scene, truth
from .helpers.end_to_end import train_eval_predict

TINY = ("model.base_channels=8", "model.depth=2", "data.crop_size=32", "data.batch_size=4", "trainer.max_epochs=2")
QUIET = ("trainer.enable_model_summary=false", "callbacks.prediction_images.every_n_epochs=1", "data.num_workers=0")
FORMATS = ("coco", "labelme", "cvat_mask")
NAMES = {
    "coco": ["background", "road", "car", "sign"],
    "labelme": ["background", "car", "road", "sign"],  # labels sorted
    "cvat_mask": ["background", "road", "car", "sign"],  # labelmap.txt's order
}


def module(root: Path, layout: str, tmp_path: Path, **keys) -> FolderDataModule:
    return FolderDataModule(str(root), layout=layout, cache_dir=str(tmp_path / "cache"), num_workers=0, **keys)


def mask_of(datamodule: FolderDataModule, name_part: str) -> np.ndarray:
    pair = next(pair for split in ("train", "val", "test") for pair in datamodule.pairs[split] if name_part in pair.name)
    with Image.open(pair.mask) as mask:
        return np.asarray(mask)


@pytest.mark.parametrize("layout", FORMATS)
def test_an_export_becomes_the_masks_its_shapes_mean_without_writing_into_it(layout, tmp_path):
    root, _ = getattr(annotation_exports, layout)(tmp_path)
    before = sorted((path.relative_to(root), path.stat().st_mtime_ns) for path in root.rglob("*"))
    datamodule = module(root, layout, tmp_path)
    assert list(datamodule.class_names) == NAMES[layout]
    extra = int(layout == "coco")  # one image of each COCO split has no annotations
    assert datamodule.split_sizes == {"train": 5 + extra, "val": 2 + extra, "test": 2 + extra}
    for split in ("train", "val", "test"):
        for pair in datamodule.pairs[split]:
            assert (tmp_path / "cache") in pair.mask.parents
    # seed 1 is the second train image of every export: road, a car on it (smaller: on top), a sign (RLE, mask shape)
    second = {"coco": "train/img1_", "labelme": "train/photo_01", "cvat_mask": "frame_000001"}[layout]
    assert (mask_of(datamodule, second) == truth(scene(1), tuple(NAMES[layout]))).all()
    assert int(datamodule.class_pixel_counts[NAMES[layout].index("sign")]) > 0
    assert sorted((path.relative_to(root), path.stat().st_mtime_ns) for path in root.rglob("*")) == before


def test_a_coco_image_without_annotations_is_background_and_the_placeholder_no_class(tmp_path):
    root, _ = annotation_exports.coco(tmp_path)
    datamodule = module(root, "coco", tmp_path)
    assert "street" not in datamodule.class_names  # Roboflow's super-category of all the others
    assert (mask_of(datamodule, "train/img5_") == 0).all()
    # a category with supercategory 'none' that is not the others' parent is a class like any other
    path = root / "train" / "_annotations.coco.json"
    document = json.loads(path.read_text())
    document["categories"][1]["supercategory"] = "ground"
    path.write_text(json.dumps(document))
    assert "street" in module(root, "coco", tmp_path).class_names


def test_coco_2017_layout_by_two_keys(tmp_path):
    root, _ = annotation_exports.coco(tmp_path)
    coco = tmp_path / "coco2017"
    (coco / "annotations").mkdir(parents=True)
    for split, folder in (("train", "train"), ("val", "valid")):
        (root / folder).rename(coco / f"{split}2017")
        (coco / f"{split}2017" / "_annotations.coco.json").rename(coco / "annotations" / f"instances_{split}2017.json")
    keys = {"coco_annotations": "annotations/instances_{split}2017.json", "coco_images": "{split}2017"}
    datamodule = module(coco, "coco", tmp_path, **keys)
    assert datamodule.split_sizes == {"train": 6, "val": 3, "test": 3} and datamodule.test_is_val
    assert datamodule.pairs["train"][0].name.startswith("train2017/")


@pytest.mark.parametrize(("unlisted", "road"), [("background", 0), ("void", 255)])
def test_data_classes_chooses_and_orders_a_subset(unlisted, road, tmp_path):
    root, _ = annotation_exports.coco(tmp_path)
    datamodule = module(root, "coco", tmp_path, classes=["sign", "car"], unlisted=unlisted)
    assert datamodule.class_names == ("background", "sign", "car")
    mask, boxes = mask_of(datamodule, "train/img1_"), scene(1)
    x1, y1, x2, y2 = boxes["car"]
    assert (mask[y1 : y2 + 1, x1 : x2 + 1] == 2).all()
    assert mask[boxes["road"][1], 0] == road and mask[0, 0] == 0


def test_labelme_without_subfolders_validates_on_a_seeded_fraction_or_a_fold(tmp_path):
    root, _ = annotation_exports.labelme(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in root.rglob("photo_*"):
        path.rename(flat / path.name)
    datamodule = module(flat, "labelme", tmp_path, val_fraction=0.2)
    assert datamodule.split_sizes == {"train": 7, "val": 2, "test": 2} and datamodule.test_is_val
    again = module(flat, "labelme", tmp_path, val_fraction=0.2)
    assert [pair.name for pair in again.pairs["val"]] == [pair.name for pair in datamodule.pairs["val"]]
    folds = [module(flat, "labelme", tmp_path, folds=3, fold=fold).pairs["val"] for fold in range(3)]
    images = sorted(path.with_suffix(".jpg").name for path in flat.glob("*.json"))
    assert sorted(pair.name for fold in folds for pair in fold) == images


def test_cached_masks_are_reused_and_drawn_again_when_the_json_changes(tmp_path):
    root, _ = annotation_exports.coco(tmp_path)
    first = module(root, "coco", tmp_path)
    mask = first.pairs["train"][1].mask
    drawn = mask.stat().st_mtime_ns
    assert module(root, "coco", tmp_path).pairs["train"][1].mask.stat().st_mtime_ns == drawn  # cached: not drawn again
    path = root / "train" / "_annotations.coco.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"]:
        annotation["category_id"] = 3 if annotation["category_id"] == 2 else annotation["category_id"]  # cars become signs
    path.write_text(json.dumps(document))
    changed = module(root, "coco", tmp_path)
    assert changed.pairs["train"][1].mask.parent != mask.parent
    assert 2 not in mask_of(changed, "train/img1_") and 2 in np.asarray(Image.open(mask))


def test_without_pycocotools_data_coco_says_what_to_install(tmp_path, monkeypatch):
    root, _ = annotation_exports.coco(tmp_path)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools raises ImportError
    with pytest.raises(FolderDataError, match=r"pip install segsweep\[annotations\]$"):
        module(root, "coco", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("layout", FORMATS)
def test_an_export_trains_evaluates_and_predicts(layout, tmp_path):
    root, scored = getattr(annotation_exports, layout)(tmp_path)
    common = (f"data={layout}", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}")
    source = {"coco": root / "test", "labelme": root / "test", "cvat_mask": root / "JPEGImages"}[layout]
    train_eval_predict(tmp_path, (*common, *TINY, *QUIET), NAMES[layout], scored, source, (64, 48))
