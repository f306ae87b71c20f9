"""How annotation exports are drawn (overlaps, RLE, circles, line widths) and their bad input, one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from segsweep.data.annotations import paint
from segsweep.data.folder import FolderDataModule
from segsweep.data.folder_classes import FolderDataError

from .helpers import annotation_exports
from .helpers.annotation_exports import HEIGHT, WIDTH
from .helpers.commands import run_module


def module(root: Path, layout: str, tmp_path: Path, **keys) -> FolderDataModule:
    return FolderDataModule(str(root), layout=layout, cache_dir=str(tmp_path / "cache"), num_workers=0, **keys)


def first_mask(datamodule: FolderDataModule) -> np.ndarray:
    with Image.open(datamodule.layout.splits["train"][0].mask) as mask:  # as listed: one image cannot be split
        return np.asarray(mask)


def test_the_smaller_region_is_on_top_whatever_the_order_and_the_later_of_equal_ones():
    big, small = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    big[:, :] = True
    small[1:3, 1:3] = True
    lookup = {"big": 1, "small": 2, "twin": 3}
    for regions in ([("big", big), ("small", small)], [("small", small), ("big", big)]):
        mask = paint(4, 4, regions, lookup, 0)
        assert (mask[1:3, 1:3] == 2).all() and mask[0, 0] == 1
    assert (paint(4, 4, [("small", small), ("twin", small)], lookup, 0)[1:3, 1:3] == 3).all()
    assert paint(4, 4, [("unlisted", small)], lookup, 255)[1, 1] == 255


def _one_image_coco(tmp_path: Path, segmentation, category_id: int = 1) -> Path:
    """A Roboflow-layout export of one train image with one annotation."""
    root = tmp_path / "one"
    (root / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / "train" / "a.png")
    annotation = {"id": 7, "image_id": 1, "category_id": category_id, "segmentation": segmentation, "iscrowd": 1}
    document = {
        "images": [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}],
    }
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(document))
    return root


def test_compressed_and_uncompressed_rle_draw_the_same_pixels(tmp_path):
    pixels = np.zeros((HEIGHT, WIDTH), np.uint8)
    pixels[5:20, 30:41] = 1
    pixels[30, 2:9] = 1
    compressed = coco_mask.encode(np.asfortranarray(pixels))
    compressed["counts"] = compressed["counts"].decode()
    for name, segmentation in (("a", compressed), ("b", annotation_exports.uncompressed_rle(pixels.astype(bool)))):
        root = _one_image_coco(tmp_path / name, segmentation)
        assert (first_mask(module(root, "coco", tmp_path)) == pixels).all()


def _one_image_labelme(tmp_path: Path, shape: dict) -> Path:
    root = tmp_path / "one"
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / "a.png")
    document = annotation_exports.labelme_json("a.png", {}) | {"shapes": [{"label": "thing", **shape}]}
    (root / "a.json").write_text(json.dumps(document))
    return root


def test_a_labelme_circle_is_its_centre_and_radius(tmp_path):
    root = _one_image_labelme(tmp_path, {"shape_type": "circle", "points": [[32, 24], [32, 30]]})
    mask = first_mask(module(root, "labelme", tmp_path))
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 30, 26, 38)
    assert abs(len(ys) - np.pi * 36) < 20


@pytest.mark.parametrize("width", [4, 9])
def test_a_labelme_linestrip_is_drawn_data_line_width_wide(width, tmp_path):
    shape = {"shape_type": "linestrip", "points": [[5, 20], [40, 20], [40, 40]]}
    mask = first_mask(module(_one_image_labelme(tmp_path, shape), "labelme", tmp_path, line_width=width))
    assert int(mask[:, 20].sum()) == width and int(mask[30, :].sum()) == width


def _broken(tmp_path: Path, case: str) -> tuple[Path, str, dict, str]:
    """An export broken as ``case`` says: (data.root, layout, keys, the file the error must name)."""
    if case.startswith("coco"):
        root, _ = annotation_exports.coco(tmp_path)
        path = root / "train" / "_annotations.coco.json"
        document = json.loads(path.read_text())
        if case == "coco_polygon_of_two_points":
            document["annotations"][0]["segmentation"] = [[1, 1, 9, 9]]
        elif case == "coco_unknown_category":
            document["annotations"][0]["category_id"] = 42
        elif case == "coco_image_missing":
            (root / "train" / document["images"][0]["file_name"]).unlink()
        elif case == "coco_image_not_named":
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / "stray.png")
            return root, "coco", {}, str(root / "train" / "stray.png")
        else:
            assert case == "coco_unknown_class"
            return root, "coco", {"classes": ["car", "bus"]}, str(path)
        path.write_text(json.dumps(document))
        return root, "coco", {}, str(path)
    if case.startswith("labelme"):
        root, _ = annotation_exports.labelme(tmp_path)
        path = root / "train" / "photo_00.json"
        document = json.loads(path.read_text())
        if case == "labelme_polygon_of_two_points":
            document["shapes"][0]["points"] = document["shapes"][0]["points"][:2]
        elif case == "labelme_image_path_missing":
            document["imagePath"] = "../images/photo_00.jpg"
        else:
            assert case == "labelme_image_without_json"
            path.unlink()
            return root, "labelme", {}, str(root / "train" / "photo_00.jpg")
        path.write_text(json.dumps(document))
        return root, "labelme", {}, str(path)
    root, _ = annotation_exports.cvat_mask(tmp_path)
    if case == "cvat_colour_not_in_labelmap":
        mask = root / "SegmentationClass" / "frame_000000.png"
        pixels = np.asarray(Image.open(mask)).copy()
        pixels[0, 0] = (1, 2, 3)
        Image.fromarray(pixels).save(mask)
        return root, "cvat_mask", {}, str(mask)
    assert case == "cvat_list_names_missing_image"
    listing = root / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_text(listing.read_text() + "frame_999999\n")
    return root, "cvat_mask", {}, f"{listing}:3"


BAD = {
    "coco_polygon_of_two_points": "annotation 0 (img0_jpg.rf.0000.png): a polygon with fewer than 3 points (2)",
    "coco_unknown_category": "category id 42, which no category defines",
    "coco_image_missing": "names image img0_jpg.rf.0000.png, missing from",
    "coco_image_not_named": "an image _annotations.coco.json does not name",
    "coco_unknown_class": "data.classes names 'bus', not a category of this export (road, car, sign)",
    "labelme_polygon_of_two_points": "shapes[0] (road): a polygon with fewer than 3 points (2)",
    "labelme_image_path_missing": "imagePath '../images/photo_00.jpg' names no file",
    "labelme_image_without_json": "image without its Labelme JSON (expected",
    "cvat_colour_not_in_labelmap": "colours [1, 2, 3] are not in",
    "cvat_list_names_missing_image": "lists frame_999999, but",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_the_file(case, tmp_path):
    root, layout, keys, named = _broken(tmp_path, case)
    with pytest.raises(FolderDataError) as raised:
        module(root, layout, tmp_path, **keys)
    message = str(raised.value)
    assert BAD[case] in message and named in message and "\n" not in message


def test_a_bad_export_fails_the_command_in_one_line_with_exit_1(tmp_path):
    root, _, _, mask = _broken(tmp_path, "cvat_colour_not_in_labelmap")
    run_dir = tmp_path / "run"
    command = ("data=cvat_mask", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}")
    result = run_module("segsweep.train", *command, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "are not in" in line]
    assert result.returncode == 1 and len(lines) == 1 and mask in lines[0] and "labelmap.txt" in lines[0]
    assert not (run_dir / "checkpoints").exists()
