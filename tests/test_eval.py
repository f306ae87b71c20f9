"""segsweep-eval: reproduces training's test metrics from a checkpoint, confusion matrix, per-class table."""

import csv
import json
import os
import random
import subprocess

import pytest
from omegaconf import OmegaConf
from PIL import Image

from segsweep.eval import data_config, normalized, per_class_table

from .helpers.commands import error_lines, run_module
from .helpers.outputs import CLASSES, read_metrics


def test_eval_reproduces_the_training_test_metrics(fast_run, tmp_path):
    out = tmp_path / "eval"
    result = run_module("segsweep.eval", f"ckpt_path={fast_run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={out}")
    report = json.loads((out / "eval.json").read_text())
    recorded = read_metrics(fast_run)["test"]
    assert report["metrics"]["test/mIoU"] == pytest.approx(recorded["test/mIoU"], abs=1e-6)
    for name in ("pixel_acc", "boundary_f1", "loss", *(f"iou/{c}" for c in CLASSES)):
        assert report["metrics"][f"test/{name}"] == pytest.approx(recorded[f"test/{name}"], abs=1e-6), name
    assert report["training_test_mIoU"] == pytest.approx(recorded["test/mIoU"])

    # confusion matrix over the whole test split (debug=fast: 8 scenes of 32x32 px)
    matrix = report["confusion_matrix"]
    assert matrix["classes"] == list(CLASSES)
    assert sum(map(sum, matrix["counts"])) == 8 * 32 * 32
    for row, shares in zip(matrix["counts"], matrix["normalized"]):
        assert sum(shares) == pytest.approx(1.0) if sum(row) else all(v is None for v in shares)
    with Image.open(out / "confusion_matrix.png") as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300

    # per-class table: eval.json, per_class.csv and the console agree
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    assert [row["class"] for row in rows] == list(CLASSES)
    assert set(rows[0]) == {"class", "iou", "precision", "recall", "pixel_share", "pixels"}
    for row, entry in zip(rows, report["per_class"]):
        assert float(row["iou"]) == pytest.approx(recorded[f"test/iou/{row['class']}"], abs=1e-6)
        assert int(row["pixels"]) == entry["pixels"]
    assert sum(float(row["pixel_share"]) for row in rows) == pytest.approx(1.0)
    assert "per class" in result.stdout and "pedestrian" in result.stdout
    assert (out / ".hydra" / "config.yaml").is_file() and not list(out.rglob("*.tmp"))


@pytest.mark.parametrize(("label", "extra"), [("evaluate", ""), ("predict", " size=64")])
def test_the_commands_a_training_run_prints_run_outside_an_activated_venv(fast_run, tmp_path, label, extra):
    lines = [line for line in (fast_run / "train.log").read_text().splitlines() if f"] - {label}: " in line]
    printed = lines[-1].split(f"] - {label}: ", 1)[1].strip()
    # as typed into a fresh shell: no venv on PATH, so a bare `python` would not be this installation's
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    command = f"{printed}{extra} hydra.run.dir={tmp_path / label}"
    result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"


def test_eval_of_a_run_dir_with_a_data_override(fast_run, tmp_path):
    saved_config = (fast_run / ".hydra" / "config.yaml").read_text()
    run_module("segsweep.eval", f"ckpt_path={fast_run}", "data.test_size=4", f"paths.log_dir={tmp_path}")
    (out,) = (tmp_path / "eval" / "runs").iterdir()  # its own run dir: the training run dir is only read
    assert (fast_run / ".hydra" / "config.yaml").read_text() == saved_config and not (fast_run / "eval.json").exists()
    report = json.loads((out / "eval.json").read_text())
    assert report["checkpoint"].endswith("checkpoints/best.ckpt")
    assert report["data"]["test_size"] == 4 and report["data"]["image_size"] == 32
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == 4 * 32 * 32


def test_data_overrides_merge_into_the_saved_data_config():
    saved = OmegaConf.create({"image_size": 32, "test_size": 8, "batch_size": 8, "scene": {"layout": "random", "max_cars": 3}})
    overrides = OmegaConf.create({"image_size": None, "test_size": 64, "batch_size": None, "scene": {"max_cars": 5}})
    merged = data_config(saved, overrides)
    assert OmegaConf.to_container(merged) == {
        "image_size": 32,
        "test_size": 64,
        "batch_size": 8,
        "scene": {"layout": "random", "max_cars": 5},
    }


def test_per_class_table_from_a_confusion_matrix():
    import torch

    counts = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    rows = per_class_table(counts, ["a", "b", "c"])
    assert rows[0]["precision"] == pytest.approx(8 / 9) and rows[0]["recall"] == pytest.approx(0.8)
    assert rows[1]["iou"] == pytest.approx(3 / (4 + 5 - 3)) and rows[1]["pixel_share"] == pytest.approx(4 / 14)
    assert all(rows[2][key] != rows[2][key] for key in ("iou", "precision", "recall"))  # NaN: no pixels at all
    assert normalized(counts)[0].tolist() == pytest.approx([0.8, 0.2, 0.0])


def test_a_corrupt_checkpoint_is_one_line_naming_it(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(random.Random(0).randbytes(4096))
    result = run_module("segsweep.eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert result.returncode != 0
    (line,) = [line for line in error_lines(result, "ERROR", "Error") if str(checkpoint) in line]
    assert "eval failed" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "eval" / "eval.json").exists()
