"""segsweep-predict: sliding-window masks and overlays for files, folders and generated scenes; bad inputs."""

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segsweep.app.sources import parse_size
from segsweep.data.images import ImageError, read_image
from segsweep.data.scenes import CLASS_COLORS, SCENE_CLASSES
from segsweep.models.metrics import confusion_matrix, iou_from_confusion
from segsweep.runs.visualize import overlay

from .helpers.commands import error_lines, run_module

PALETTE = [channel for color in CLASS_COLORS for channel in color]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def predict(*args: str, check: bool = True):
    return run_module("segsweep.predict", *args, check=check)


def check_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An indexed PNG of (height, width) whose palette starts with the class colours."""
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (size[1], size[0])
        assert image.getpalette()[: len(PALETTE)] == PALETTE
        values = np.array(image)
    assert values.max() < len(CLASS_COLORS)
    return values


def check_overlay(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An RGB PNG: the (height, width) overlay at the top left, a legend below (as wide as the overlay, or wider)."""
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.width >= size[1] and image.height > size[0]
        pixels = np.array(image)
    assert (pixels[size[0] :, : size[1]] == 0).any()  # the legend's black text under the image
    return pixels[: size[0], : size[1]]


def check_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (size[1], size[0])
        return np.array(image)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of an RGBA PNG, a greyscale PNG smaller than a 32 px tile, a JPEG and a text file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "RGBA").save(folder / "a_rgba.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L").save(folder / "b_grey.png")
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), "RGB").save(folder / "c_photo.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, images) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    whole = (images / "a_rgba.png").read_bytes()
    files = {
        "truncated": folder / "truncated.png",
        "empty": folder / "empty.png",
        "text": folder / "readme.txt",
        "missing": folder / "missing.png",
    }
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    files["empty"].write_bytes(b"")
    files["text"].write_text("hello\n")
    return files


def test_a_generated_scene_by_sliding_window(fast_run, tmp_path):
    out = tmp_path / "pred"
    result = predict(f"ckpt_path={fast_run}", "input=generate", "size=[512,768]", "tile_batch=64", f"hydra.run.dir={out}")
    report = json.loads((out / "predictions.json").read_text())
    assert report["failed"] == 0 and report["roi_size"] == [32, 32] and report["mode"] == "gaussian"
    (entry,) = report["predictions"]
    assert entry["status"] == "ok" and entry["size"] == [512, 768]
    assert entry["tiles"] > 500  # 32 px tiles with 25% overlap over 512x768
    assert 0.0 <= entry["mIoU"] <= 1.0 and set(entry["iou"]) == {"background", "road", "car", "pedestrian"}
    mask = check_mask(Path(entry["mask"]), (512, 768))
    truth = check_mask(Path(entry["truth"]), (512, 768))
    assert set(np.unique(truth)) == {0, 1, 2, 3}  # the generated scene shows every class (scene 0 has no pedestrian)
    assert entry["scene"]["index"] > 0 and entry["name"] == f"scene_{entry['scene']['index']:04d}"
    overlaid = check_overlay(Path(entry["overlay"]), (512, 768))
    image = torch.from_numpy(check_image(Path(entry["image"]), (512, 768))).permute(2, 0, 1)
    # drawn in the overlay colours (tests/test_overlays.py: they stand out from the image), not the masks' palette
    expected = overlay(image[None], torch.from_numpy(mask)[None], SCENE_CLASSES.overlay_colors)[0]
    assert np.array_equal(overlaid, expected.permute(1, 2, 0).numpy())
    iou = iou_from_confusion(confusion_matrix(torch.from_numpy(truth), torch.from_numpy(mask), 4)).tolist()
    present = [value for value in iou if value == value]
    assert entry["mIoU"] == pytest.approx(sum(present) / len(present))
    assert "mIoU" in result.stdout
    assert not list(out.rglob("*.tmp"))


def test_a_folder_of_rgba_greyscale_and_jpeg_images(fast_run, images, tmp_path):
    out, folder = tmp_path / "pred", tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "scans.png").mkdir()  # not regular files, image suffix or not: skipped, and said so
    os.mkfifo(folder / "pipe.png")
    result = predict(f"ckpt_path={fast_run / 'checkpoints' / 'best.ckpt'}", f"input={folder}", f"hydra.run.dir={out}")
    report = json.loads((out / "predictions.json").read_text())
    entries = report["predictions"]
    assert [Path(entry["input"]).name for entry in entries] == ["a_rgba.png", "b_grey.png", "c_photo.jpg"]  # sorted
    assert report["failed"] == 0 and all(entry["status"] == "ok" for entry in entries)
    for entry, size in zip(entries, [(40, 50), (20, 24), (70, 90)]):
        assert entry["size"] == list(size)
        check_mask(out / f"{Path(entry['input']).stem}_mask.png", size)
        check_overlay(out / f"{Path(entry['input']).stem}_overlay.png", size)
        assert "mIoU" not in entry  # no ground truth for files
    log = result.stdout + result.stderr
    assert "a_rgba.png: RGBA image converted to RGB" in log and "b_grey.png: L image converted to RGB" in log
    assert "skipped 3 entries that are not image files (notes.txt, pipe.png, scans.png)" in log and not error_lines(result)


def test_bad_images_fail_alone_and_are_named(fast_run, images, bad_files, tmp_path):
    out = tmp_path / "pred"
    inputs = [images / "a_rgba.png", *bad_files.values(), images / "c_photo.jpg"]
    result = predict(f"ckpt_path={fast_run}", f"input=[{','.join(map(str, inputs))}]", f"hydra.run.dir={out}", check=False)
    assert result.returncode != 0
    errors = error_lines(result)
    for kind, path in bad_files.items():
        (line,) = [line for line in errors if str(path) in line]  # one line names each bad file
        expected = {"truncated": "truncated", "empty": "empty file", "text": "not an image", "missing": "no such file"}[kind]
        assert expected in line, line
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads((out / "predictions.json").read_text())
    assert report["failed"] == len(bad_files)
    status = {Path(entry["input"]).name: entry["status"] for entry in report["predictions"]}
    assert status["a_rgba.png"] == status["c_photo.jpg"] == "ok"
    check_mask(out / "a_rgba_mask.png", (40, 50))
    check_mask(out / "c_photo_mask.png", (70, 90))
    assert sorted(path.name for path in out.glob("*.png")) == [
        "a_rgba_mask.png",
        "a_rgba_overlay.png",
        "c_photo_mask.png",
        "c_photo_overlay.png",
    ]
    assert not list(out.rglob("*.tmp"))


def other_class_count(fast_run: Path, path: Path) -> Path:
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    checkpoint["hyper_parameters"]["config"]["model"]["num_classes"] = 5
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("case", ["missing", "random_bytes", "other_class_count", "output_dir_is_a_file"])
def test_bad_checkpoint_or_output_dir_is_one_line_naming_it(fast_run, images, tmp_path, case):
    checkpoint, output_dir = fast_run / "checkpoints" / "best.ckpt", tmp_path / "out"
    if case == "missing":
        checkpoint = tmp_path / "nope.ckpt"
    elif case == "random_bytes":
        checkpoint = tmp_path / "random.ckpt"
        checkpoint.write_bytes(random.Random(0).randbytes(4096))
    elif case == "other_class_count":
        checkpoint = other_class_count(fast_run, tmp_path / "five.ckpt")
    else:
        output_dir.write_text("a file where the output directory should be\n")
    named = output_dir if case == "output_dir_is_a_file" else checkpoint
    result = predict(
        f"ckpt_path={checkpoint}",
        f"input={images / 'a_rgba.png'}",
        f"output_dir={output_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode != 0
    (line,) = [line for line in error_lines(result) if str(named) in line]
    assert "predict failed" in line
    if case == "other_class_count":
        assert "do not fit" in line
    assert "Traceback" not in result.stdout + result.stderr
    if case != "output_dir_is_a_file":
        assert not output_dir.exists() or not list(output_dir.iterdir())


def test_read_image_errors_name_the_file(bad_files, images):
    for path in bad_files.values():
        with pytest.raises(ImageError, match=str(path)):
            read_image(path)
    assert read_image(images / "b_grey.png").shape == (3, 20, 24)
    assert read_image(images / "a_rgba.png").dtype == torch.uint8


def test_size_values():
    assert parse_size(1024) == (1024, 1024) and parse_size([512, 768]) == (512, 768)
    for bad in ([512, 768, 3], 4, "big"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
