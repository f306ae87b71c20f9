"""Real training runs through Hydra: outputs, TensorBoard files, checkpoints, metrics.json."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from segsweep.app.build import load_module
from segsweep.data.scenes_datamodule import SceneDataModule

from .helpers.commands import run_module
from .helpers.outputs import read_metrics

CLASSES = ("background", "road", "car", "pedestrian")
PER_CLASS = [f"{metric}/{name}" for metric in ("iou", "dice") for name in CLASSES]
STAGE_METRICS = ["loss", "mIoU", "mDice", "pixel_acc", "boundary_f1", *PER_CLASS]


def load_events(run_dir: Path) -> dict:
    """Scalars, images and hparams plugin data of every TensorBoard run under run_dir, by TensorBoard's reader."""
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(run_dir))
    multiplexer.Reload()
    hparams = multiplexer.PluginRunToTagToContent("hparams")
    runs = {}
    for run in multiplexer.Runs():
        accumulator = multiplexer.GetAccumulator(run)
        tags = accumulator.Tags()
        runs[run] = {
            "scalars": set(tags["scalars"]),
            "images": set(tags["images"]),
            "hparams": hparams.get(run, {}),
            "accumulator": accumulator,
        }
    return runs


def test_run_dir_has_the_contracted_outputs(fast_run):
    assert (fast_run / ".hydra" / "config.yaml").is_file()
    assert (fast_run / "checkpoints" / "best.ckpt").is_file() and (fast_run / "checkpoints" / "last.ckpt").is_file()
    assert list(fast_run.glob("events.out.tfevents.*"))
    metrics = read_metrics(fast_run)
    assert metrics["status"] == "completed" and metrics["error"] is None
    assert "${" not in json.dumps(metrics["config"]) and metrics["config"]["data"]["image_size"] == 32
    assert set(metrics["best"]) == {"val/mIoU", "epoch"} and metrics["best"]["epoch"] == 1
    assert {f"test/{name}" for name in STAGE_METRICS} <= set(metrics["test"])
    (entry,) = metrics["history"]
    assert {"epoch", "time_s", "val/mIoU_best", *(f"val/{name}" for name in STAGE_METRICS)} <= set(entry)
    assert entry["val/mIoU"] == metrics["best"]["val/mIoU"]
    assert not list(fast_run.rglob("*.tmp")), "atomic writes leave no temp files"
    assert not (fast_run / ".hydra" / "resumes").exists(), "a first command's records are .hydra/ itself"


def test_tensorboard_has_scalars_images_and_hparams(fast_run):
    (run,) = load_events(fast_run).values()
    expected = {"train/loss", "val/mIoU_best", *(f"{stage}/{name}" for stage in ("val", "test") for name in STAGE_METRICS)}
    assert expected <= run["scalars"], expected - run["scalars"]
    assert "val/predictions" in run["images"]
    image = run["accumulator"].Images("val/predictions")[-1]
    assert image.width > 3 * 32 and image.height > 32  # input / truth / prediction columns
    session = plugin_data_pb2.HParamsPluginData.FromString(run["hparams"]["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model/base_channels"].number_value == 16
    assert session.hparams["loss/_target_"].string_value == "segsweep.models.losses.cross_entropy.CrossEntropyLoss"
    assert {"hp/test/mIoU", "hp/val/mIoU_best", "hp/test/iou/pedestrian"} <= run["scalars"]


def test_checkpoint_loads_weights_only_and_reproduces_test_miou(fast_run):
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["config"]["seed"] == 42
    module, cfg = load_module(fast_run)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, limit_test_batches=cfg.trainer.limit_test_batches
    )
    (result,) = trainer.test(
        module, datamodule=SceneDataModule(**{k: v for k, v in cfg.data.items() if k != "_target_"}), verbose=False
    )
    assert result["test/mIoU"] == pytest.approx(read_metrics(fast_run)["test"]["test/mIoU"], abs=1e-7)


def test_a_diverging_run_stops_and_is_marked_failed(tmp_path):
    run_dir = tmp_path / "nan"
    result = run_module(
        "segsweep.train",
        "debug=fast",
        "optimizer.lr=1e30",
        "scheduler=none",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert result.returncode != 0
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "failed" and "FloatingPointError" in metrics["error"] and "at step" in metrics["error"]


def test_a_bad_override_is_one_clear_line(tmp_path):
    result = run_module("segsweep.train", "model.num_classes=7", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert result.returncode == 1
    (line,) = [line for line in (result.stdout + result.stderr).splitlines() if "num_classes" in line]
    assert line == "train failed: model.num_classes=7 but the data has 4 classes (background, road, car, pedestrian)"
    assert not (tmp_path / "bad").exists(), "a config rejected before any work leaves no run dir"


@pytest.mark.slow
def test_a_short_real_training_run_learns(tmp_path):
    run_dir = tmp_path / "learn"
    run_module(
        "segsweep.train",
        "trainer=cpu",
        "trainer.max_epochs=5",
        "data.image_size=48",
        "data.train_size=256",
        "data.val_size=64",
        "data.test_size=64",
        "model.base_channels=8",
        "model.depth=2",
        f"hydra.run.dir={run_dir}",
    )
    metrics = read_metrics(run_dir)
    # chance level (uniform guessing) is about 0.13; a learning run separates sky, road and cars
    assert metrics["best"]["val/mIoU"] > 0.5, metrics["history"]
    assert metrics["test"]["test/mIoU"] > 0.5
    curve = [entry["val/mIoU"] for entry in metrics["history"]]
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3, 4, 5]
    assert max(curve[-2:]) > curve[0]
