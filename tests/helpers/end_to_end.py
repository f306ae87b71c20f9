"""A dataset option end to end, as its user runs it: train a tiny model, evaluate it, predict with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .commands import run_module
from .outputs import read_metrics


def train_eval_predict(
    tmp_path: Path, train: Sequence[str], names: list[str], scored: int, source: Path, size: tuple[int, int]
) -> None:
    """Train with ``train``; the run records the dataset's class ``names``, eval's confusion matrix counts the
    ``scored`` pixels under them, and predict writes a mask of ``size`` (width, height) for every image of ``source``."""
    run_dir = tmp_path / "run"
    run_module("segsweep.train", *train, f"hydra.run.dir={run_dir}")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["classes"]["names"] == names
    eval_dir = tmp_path / "eval"
    run_module("segsweep.eval", f"ckpt_path={run_dir}", "progress=false", f"hydra.run.dir={eval_dir}")
    report = json.loads((eval_dir / "eval.json").read_text())
    assert report["confusion_matrix"]["classes"] == names
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == scored
    predict_dir = tmp_path / "predict"
    run_module("segsweep.predict", f"ckpt_path={run_dir}", f"input={source}", "progress=false", f"hydra.run.dir={predict_dir}")
    masks = sorted(predict_dir.glob("*_mask.png"))
    assert len(masks) == len([path for path in source.iterdir() if path.suffix in (".png", ".jpg")])
    with Image.open(masks[0]) as mask:
        assert mask.size == size
