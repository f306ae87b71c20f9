"""Own data (data=folder): layout, masks of every kind, augmentation, the cached scan, bad data, and real runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from segsweep.data import folder_files
from segsweep.data.augment import Augment, AugmentSpec
from segsweep.data.folder import FolderDataModule
from segsweep.data.images import read_image
from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.export_scenes import default_scene, export
from segsweep.export_scenes import main as export_main
from segsweep.inference import sliding_window_inference
from segsweep.models.module import SegmentationModule
from segsweep.models.nets.unet import UNet
from segsweep.report import prediction_columns

from .helpers.commands import run_module
from .helpers.folders import COLORS, NAMES, classes_yaml, image_for, write_pair
from .helpers.outputs import read_metrics

# tiny runs: a small U-Net on 32 px crops, one epoch
TINY = ("model.base_channels=8", "model.depth=2", "data.crop_size=32", "data.batch_size=4", "trainer.max_epochs=1")
QUIET = ("trainer.enable_model_summary=false", "callbacks.prediction_images.every_n_epochs=1")


def labels(height: int, width: int, seed: int) -> np.ndarray:
    """A class-index mask: sky on top, road below, a vehicle box, a void (255) stripe at the left."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=np.uint8)
    horizon = int(rng.integers(height // 3, height // 2))
    mask[horizon:] = 1
    top, left = int(rng.integers(horizon, height - 8)), int(rng.integers(4, width - 12))
    mask[top : top + 8, left : left + 10] = 2
    mask[:, :2] = 255
    return mask


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Mixed sizes and formats, L/P/RGB masks, a mapping, void regions, no val/ split, a test/ split."""
    root = tmp_path / "mixed"
    classes_yaml(root, names=NAMES, colors=COLORS, ignore_colors=[[0, 0, 0]], mapping={23: 0, 7: 1, 26: "vehicle"})
    sizes = [(40, 56), (64, 48), (48, 70), (56, 56), (44, 66), (70, 64), (52, 40), (60, 60)]
    kinds = ["raw", "Praw", "rgb", "raw", "rgb", "Praw", "raw", "raw"]
    formats = ["png", "jpg", "bmp", "jpeg", "png", "png", "jpg", "png"]
    for i, ((height, width), kind, fmt) in enumerate(zip(sizes, kinds, formats)):
        write_pair(root, "train", f"img{i:02d}", labels(height, width, i), i, fmt, kind)
    for i in range(2):
        write_pair(root, "test", f"t{i}", labels(66, 50, 100 + i), 100 + i, "jpg", "raw")
    return root


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def test_mixed_folder_reads_every_mask_kind(mixed, tmp_path):
    before = listing(mixed)
    datamodule = FolderDataModule(str(mixed), crop_size=32, batch_size=4, num_workers=0, cache_dir=str(tmp_path / "cache"))
    assert datamodule.classes.names == tuple(NAMES) and datamodule.num_classes == 3
    assert datamodule.split_sizes == {"train": 7, "val": 1, "test": 2}  # no val/: 10% of 8 train images, at least 1
    datamodule.setup("fit")
    # pixel counts equal the masks' own, whatever the mask kind (P and RGB read by index and colour, raw by mapping)
    expected = torch.zeros(3, dtype=torch.long)
    for pair in datamodule.pairs["train"]:
        index = int(pair.image.stem.removeprefix("img"))
        mask = labels(*Image.open(pair.image).size[::-1], index)
        expected += torch.bincount(torch.from_numpy(mask[mask != 255]).long(), minlength=3)
    assert torch.equal(datamodule.class_pixel_counts, expected)
    assert datamodule.class_frequencies.sum().item() == pytest.approx(1.0)
    for split in ("val", "test"):  # whole images, masks exactly as drawn (jpeg images, lossless masks)
        for index, pair in enumerate(datamodule.pairs[split]):
            image, mask = datamodule.splits[split][index]
            seed = int(pair.image.stem.removeprefix("img").removeprefix("t")) + (100 if split == "test" else 0)
            truth = labels(*image.shape[-2:], seed)
            assert image.dtype == torch.float32 and torch.equal(mask, torch.from_numpy(truth).long())
    datamodule.crop_size = 48
    datamodule.splits = {}
    datamodule.setup("fit")
    for index in range(7):  # crops, padded with void where an image is smaller (40 px high)
        image, mask = datamodule.splits["train"][(index, 0)]
        assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    images, masks = datamodule.sample_images("test", 2)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    batch_images, batch_masks = next(iter(datamodule.test_dataloader()))
    assert batch_images.shape == (1, 3, 66, 50)
    assert listing(mixed) == before, "nothing is written into the dataset"


def test_index_masks_without_mapping(tmp_path):
    root = tmp_path / "plain"
    classes_yaml(root, names=NAMES)
    write_pair(root, "train", "a", labels(40, 48, 1), 1, mask_kind="L")
    write_pair(root, "train", "b", labels(48, 40, 2), 2, mask_kind="P")
    datamodule = FolderDataModule(str(root), num_workers=0, cache_dir=str(tmp_path / "cache"))
    for name, seed in (("a", 1), ("b", 2)):
        truth = labels(*Image.open(root / "train" / "images" / f"{name}.png").size[::-1], seed)
        assert np.array_equal(datamodule.reader.read(root / "train" / "masks" / f"{name}.png"), truth)
    assert datamodule.classes.colors and len(datamodule.classes.colors) == 3  # generated colours


def test_train_items_equal_the_scenes_when_exported(tmp_path):
    """The exported folder trains on bit-identical items: same images, masks, order and flips."""
    export(tmp_path / "scenes", {"train": 12, "val": 4, "test": 4}, 48, seed=0)
    folder = FolderDataModule(str(tmp_path / "scenes"), crop_size=48, num_workers=0, order_seed=5, cache_dir=str(tmp_path / "c"))
    scenes = SceneDataModule(image_size=48, train_size=12, val_size=4, test_size=4, order_seed=5, scene=default_scene())
    folder.setup("fit")
    scenes.setup("fit")
    assert torch.equal(folder.class_pixel_counts, scenes.class_pixel_counts)
    assert torch.equal(folder.class_image_pixels, scenes.class_image_pixels)
    for epoch in (0, 1, 2):
        for index in range(12):
            for mine, theirs in zip(folder.splits["train"][(index, epoch)], scenes.splits["train"][(index, epoch)]):
                assert torch.equal(mine, theirs)
    for split in ("val", "test"):
        for index in range(4):
            assert all(torch.equal(a, b) for a, b in zip(folder.splits[split][index], scenes.splits[split][index]))
    assert folder.classes == scenes.classes


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    mask = torch.from_numpy(labels(60, 80, 3))
    image = torch.from_numpy(image_for(labels(60, 80, 3), 3)).permute(2, 0, 1).contiguous()
    spec = AugmentSpec.from_config({"scale": [0.5, 1.5], "vflip": True, "brightness": 0.3, "contrast": 0.2, "hue": 0.05})
    augment = Augment(spec, crop_size=40, ignore_index=255, seed=7)
    first = [augment(image, mask, index, epoch) for epoch in range(3) for index in range(4)]
    again = [Augment(spec, 40, 255, 7)(image, mask, index, epoch) for epoch in range(3) for index in range(4)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert len({tuple(item[1].flatten().tolist()) for item in first}) > 6, "items differ across indices and epochs"
    for picture, labels_ in first:  # nearest neighbour: no new mask values; padding is void
        assert picture.shape == (3, 40, 40) and picture.dtype == torch.uint8
        assert set(labels_.unique().tolist()) <= {0, 1, 2, 255}
    with pytest.raises(ValueError, match="data.augment.rotate"):
        AugmentSpec.from_config({"rotate": 10})


def test_scan_is_cached_outside_the_data_and_redone_when_a_file_changes(mixed, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = FolderDataModule(str(mixed), num_workers=0, cache_dir=str(cache))
    counts = first.class_pixel_counts
    (cache_file,) = cache.glob("*.json")

    def no_scan(*args):
        raise AssertionError("scanned again")

    monkeypatch.setattr(folder_files, "_scan_pair", no_scan)
    assert torch.equal(FolderDataModule(str(mixed), num_workers=0, cache_dir=str(cache)).class_pixel_counts, counts)
    monkeypatch.undo()
    mask = mixed / "train" / "masks" / "img00.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    assert torch.equal(FolderDataModule(str(mixed), num_workers=0, cache_dir=str(cache)).class_pixel_counts, counts)
    assert len(list(cache.glob("*.json"))) == 2 and cache_file.exists()
    with pytest.raises(ValueError, match="inside the dataset"):
        FolderDataModule(str(mixed), cache_dir=str(mixed / ".cache"))


def test_validation_on_whole_images_uses_sliding_windows():
    net = UNet(num_classes=3, base_channels=4, depth=2)
    module = SegmentationModule(
        net, torch.nn.CrossEntropyLoss(ignore_index=255), torch.optim.Adam, {"names": NAMES}, inference_roi=32
    )
    module.eval()  # as in validation: batch norm uses its running statistics
    images = torch.rand(1, 3, 70, 45)
    with torch.no_grad():
        expected = sliding_window_inference(images, module, 32, overlap=0.25, mode="gaussian", tile_batch=16)
        assert torch.equal(module.whole_image_logits(images), expected)
    module._evaluate("test", (images, torch.zeros(1, 70, 45, dtype=torch.long)))
    assert int(module.metrics["test"]["confusion"].compute().sum()) == 70 * 45  # every pixel of the whole image


def test_export_command_writes_the_layout(tmp_path):
    out = tmp_path / "exported"
    assert export_main([str(out), "--train", "3", "--val", "0", "--test", "2", "--image-size", "40x56", "--seed", "1"]) == 0
    content = yaml.safe_load((out / "classes.yaml").read_text())
    assert content["names"] == ["background", "road", "car", "pedestrian"] and len(content["colors"]) == 4
    assert sorted(path.name for path in (out / "train" / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert not (out / "val").exists() and (out / "test" / "images" / "00001.png").is_file()
    with Image.open(out / "train" / "masks" / "00000.png") as mask, Image.open(out / "train" / "images" / "00000.png") as image:
        assert mask.mode == "L" and image.mode == "RGB" and image.size == (56, 40)
    assert export_main([str(out)]) == 1  # not empty: refused


# ---------------------------------------------------------------------------------------------------- bad data


def _bad_case(root: Path, case: str) -> str:
    """Build a broken dataset in ``root``; returns the text its one-line error must contain."""
    ok = labels(40, 48, 0)
    if case == "no classes.yaml":
        write_pair(root, "train", "a", ok, 0)
        return f"{root}/classes.yaml: missing"
    classes_yaml(root, names=NAMES, colors=COLORS)
    if case == "no train/images":  # README: one line, no run dir
        (root / "train" / "masks").mkdir(parents=True)
        return f"{root}/train/images: missing"
    for i in range(3):
        write_pair(root, "train", f"ok{i}", ok, i)
    if case == "malformed classes.yaml":
        (root / "classes.yaml").write_text("names: [sky, road\ncolors: 3\n")
        return f"{root}/classes.yaml: not valid YAML"
    if case == "classes.yaml without names":
        (root / "classes.yaml").write_text("colors: [[1, 2, 3]]\n")
        return f"{root}/classes.yaml: `names` must be a non-empty list"
    if case == "image without mask":
        write_pair(root, "train", "lonely", ok, 5)
        (root / "train" / "masks" / "lonely.png").unlink()
        return f"{root}/train/images/lonely.png: image without a mask"
    if case == "mask without image":
        write_pair(root, "train", "orphan", ok, 5)
        (root / "train" / "images" / "orphan.png").unlink()
        return f"{root}/train/masks/orphan.png: mask without an image"
    if case == "mask size differs":
        write_pair(root, "train", "small", ok, 5)
        Image.fromarray(ok[:30, :40], mode="L").save(root / "train" / "masks" / "small.png")
        return f"{root}/train/masks/small.png: mask is 40x30 (WxH) but its image small.png is 48x40"
    if case == "unknown mask value":
        bad = ok.copy()
        bad[5, 5], bad[6, 6] = 7, 42
        write_pair(root, "train", "values", bad, 5)
        return f"{root}/train/masks/values.png: mask values 7, 42 are neither a class (0..2) nor the ignore index 255"
    if case == "unknown mask colour":
        write_pair(root, "train", "colour", ok, 5, mask_kind="rgb")  # void is drawn black: not a class colour
        return f"{root}/train/masks/colour.png: mask colours [0, 0, 0] are not in classes.yaml colors"
    if case == "unreadable image":
        write_pair(root, "train", "broken", ok, 5)
        path = root / "train" / "images" / "broken.png"
        path.write_bytes(path.read_bytes()[:60])
        return f"{path}: unreadable image"
    if case == "empty mask file":
        write_pair(root, "train", "blank", ok, 5)
        (root / "train" / "masks" / "blank.png").write_bytes(b"")
        return f"{root}/train/masks/blank.png: not an image file"
    if case == "undecodable file name":
        write_pair(root, "train", "bad", ok, 5)
        for kind in ("images", "masks"):
            folder = os.fsencode(root / "train" / kind)
            os.rename(folder + b"/bad.png", folder + b"/bad\xff.png")
        return f"{root}/train/images/bad\\xff.png: file name is not valid UTF-8"
    if case == "every train mask void":
        for i in range(3):
            write_pair(root, "train", f"ok{i}", np.full_like(ok, 255), i)
        return f"{root}/train/masks: every pixel of every train mask is void"
    if case == "empty split":
        (root / "val" / "images").mkdir(parents=True)
        (root / "val" / "masks").mkdir(parents=True)
        return f"{root}/val/images: empty split"
    raise AssertionError(case)


BAD_CASES = [
    "no classes.yaml",
    "no train/images",
    "malformed classes.yaml",
    "classes.yaml without names",
    "image without mask",
    "mask without image",
    "mask size differs",
    "unknown mask value",
    "unknown mask colour",
    "unreadable image",
    "empty mask file",
    "undecodable file name",
    "every train mask void",
    "empty split",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_data_is_one_line_naming_the_file_before_training(tmp_path, case):
    root = tmp_path / "data"
    expected = _bad_case(root, case)
    before = listing(root)
    run_dir = tmp_path / "run"
    result = run_module(
        "segsweep.train",
        "data=folder",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]  # one line, no traceback
    assert line.startswith("train failed: ") and expected in line, result.stderr[-2000:]
    assert not run_dir.exists(), "no run dir left behind"
    assert listing(root) == before, "nothing is written into the dataset"


# ---------------------------------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_an_exported_folder_trains_evaluates_and_predicts(tmp_path, monkeypatch):
    root = tmp_path / "exported"
    export(root, {"train": 16, "val": 4, "test": 3}, (40, 56), seed=0)
    run_dir = tmp_path / "run"
    run_module(
        "segsweep.train",
        "data=folder",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *TINY,
        *QUIET,
        f"hydra.run.dir={run_dir}",
    )
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["classes"]["names"] == ["background", "road", "car", "pedestrian"]
    assert metrics["config"]["model"]["num_classes"] == 4 and "test/iou/pedestrian" in metrics["test"]

    eval_dir = tmp_path / "eval"
    shutil.rmtree(tmp_path / "cache")  # the checkpoint's data.cache_dir: eval writes only into the user's own cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
    run_module("segsweep.eval", f"ckpt_path={run_dir}", "progress=false", f"hydra.run.dir={eval_dir}")
    assert not (tmp_path / "cache").exists() and list((tmp_path / "user_cache" / "segsweep" / "folder").glob("*.json"))
    report = json.loads((eval_dir / "eval.json").read_text())
    assert report["confusion_matrix"]["classes"] == ["background", "road", "car", "pedestrian"]
    # whole images at full resolution: every pixel of the 3 test images is scored
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == 3 * 40 * 56
    assert report["metrics"]["test/mIoU"] == pytest.approx(metrics["test"]["test/mIoU"], abs=1e-6)

    predict_dir = tmp_path / "predict"
    run_module(
        "segsweep.predict",
        f"ckpt_path={run_dir}",
        f"input={root / 'test' / 'images'}",
        "progress=false",
        f"hydra.run.dir={predict_dir}",
    )
    with Image.open(predict_dir / "00000_mask.png") as mask:
        assert mask.mode == "P" and mask.size == (56, 40)
        assert mask.getpalette()[:12] == [100, 150, 180, 100, 100, 100, 180, 50, 50, 50, 170, 50]
    result = run_module(
        "segsweep.predict", f"ckpt_path={run_dir}", "input=generate", f"hydra.run.dir={tmp_path / 'gen'}", check=False
    )
    assert result.returncode != 0 and "not on generated scenes" in result.stderr + result.stdout


@pytest.mark.slow
def test_a_mixed_folder_trains_with_workers_and_whole_image_validation(mixed, tmp_path):
    run_dir = tmp_path / "run"
    run_module(
        "segsweep.train",
        "data=folder",
        f"data.root={mixed}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=2",
        "data.augment.scale=[0.8,1.2]",
        "data.augment.brightness=0.2",
        "loss=weighted_ce",
        *TINY,
        *QUIET,
        f"hydra.run.dir={run_dir}",
    )
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["classes"]["names"] == NAMES
    assert set(metrics["class_weights"]) == set(NAMES)
    assert {f"test/iou/{name}" for name in NAMES} <= set(metrics["test"])
    assert (
        metrics["classes"]["train_pixels"]
        == FolderDataModule(str(mixed), cache_dir=str(tmp_path / "cache")).class_pixel_counts.tolist()
    )


@pytest.mark.slow
@pytest.mark.parametrize("tamper", ["counts", "structure"])
def test_an_altered_scan_cache_is_scanned_again_not_trained_on(mixed, tmp_path, tamper):
    cache = tmp_path / "cache"
    command = ["data=folder", f"data.root={mixed}", f"data.cache_dir={cache}", "loss=weighted_ce", *TINY, *QUIET]
    first, second = tmp_path / "first", tmp_path / "second"
    run_module("segsweep.train", *command, f"hydra.run.dir={first}")
    (cache_file,) = cache.glob("*.json")
    content = json.loads(cache_file.read_text())
    for entry in content["pairs"].values():
        if tamper == "counts":
            entry[3] = [1] * (len(NAMES) - 1) + [10**6]
        else:
            entry[3] = {"sky": 5}
    cache_file.write_text(json.dumps(content))
    result = run_module("segsweep.train", *command, f"hydra.run.dir={second}")
    assert "scanning again" in result.stdout + result.stderr
    assert read_metrics(second)["class_weights"] == read_metrics(first)["class_weights"]
    assert read_metrics(second)["classes"]["train_pixels"] == read_metrics(first)["classes"]["train_pixels"]


@pytest.mark.slow
def test_a_loss_sweep_on_a_folder_reports_its_classes(tmp_path):
    root = tmp_path / "exported"
    export(root, {"train": 12, "val": 4, "test": 4}, 40, seed=0)
    classes_yaml(root, names=["sky", "street", "auto", "walker"])  # the folder's own names, generated colours
    sweep_dir = tmp_path / "sweep"
    run_module(
        "segsweep.train",
        "-m",
        "experiment=loss_comparison",
        "data=folder",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "loss=ce,dice",
        "seed=1",
        *TINY,
        "hydra.job.config.override_dirname.exclude_keys=[experiment,data,data.root,data.cache_dir,model.base_channels,"
        "model.depth,data.crop_size,data.batch_size,trainer.max_epochs,hydra/launcher,paths.log_dir,trainer]",
        f"hydra.sweep.dir={sweep_dir}",
    )
    jobs = {"loss=ce,seed=1", "loss=dice,seed=1"}
    assert {path.name for path in sweep_dir.iterdir() if path.is_dir()} == jobs
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == jobs
    for run in jobs:
        tags = multiplexer.GetAccumulator(run).Tags()
        assert "val/iou/walker" in tags["scalars"] and "val/predictions" in tags["images"]
    text = (sweep_dir / "report.md").read_text()
    assert "walker" in text and "pedestrian" not in text
    with (sweep_dir / "report.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {row["group"] for row in rows} == {"loss=ce", "loss=dice"} and "test/iou/walker" in rows[0]
    # predictions.png: whole test images (40 px; not a crop_size crop), with a legend of the folder's classes
    columns, notes, shown = prediction_columns({"loss=ce": sweep_dir / "loss=ce,seed=1"}, 2)
    first = read_image(sorted((root / "test" / "images").iterdir())[0]).permute(1, 2, 0).numpy()
    assert not notes and first.shape == (40, 40, 3) and np.array_equal(columns["input"][0], first)
    assert columns["loss=ce"][0].shape == first.shape
    assert shown and {name for name, _ in shown} <= {"sky", "street", "auto", "walker"}
