"""What a training run says at its start and end: where its outputs are, what it is, and how it did."""

from __future__ import annotations

import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from segsweep.runs.console import significant

# Config groups that say what a run is, in the order the summary names them.
SUMMARY_GROUPS = ("experiment", "rarity", "strategy", "loss", "model", "data", "optimizer", "scheduler")


def _data_size(cfg: DictConfig, size: int) -> str:
    data = cfg.data
    if "root" in data:  # your own data (conf/data/folder.yaml)
        return f"{data.root}, {size} px crops"
    return f"{data.train_size}/{data.val_size}/{data.test_size} scenes of {size} px"


def run_summary(cfg: DictConfig, choices: dict[str, Any], device: torch.device | str, size: int) -> str:
    """One line: the config-group choices that make the run (``loss=dice model=unet ...``), its data, device and threads.
    ``size``: the data's training size as set up (a folder's crop shrinks to images smaller than ``data.crop_size``)."""
    groups = " ".join(f"{group}={choices[group]}" for group in SUMMARY_GROUPS if choices.get(group))
    return (
        f"{groups} | {_data_size(cfg, size)} | {cfg.trainer.max_epochs} epochs | device {device}, "
        f"{torch.get_num_threads()} threads | seed {cfg.seed}"
    )


def start_lines(run_dir: Path, summary: str) -> list[str]:
    return [f"run dir: {run_dir}", f"run: {summary}"]


def end_line(run_dir: Path, metrics: dict[str, float]) -> str:
    """The run dir again with its best val and test mIoU (4 significant digits)."""
    best, test = metrics.get("val/mIoU_best", math.nan), metrics.get("test/mIoU", math.nan)
    return f"done: {run_dir}  best val mIoU {significant(best)}  test mIoU {significant(test)}"


def command(module: str) -> str:
    """How to run ``segsweep.<module>`` with this process's own installation: its console script where the one on PATH
    is this interpreter's, else this interpreter's absolute path with ``-m`` (it runs from any directory)."""
    interpreter = Path(sys.executable)
    script = shutil.which(f"segsweep-{module}")
    if script is not None and Path(script).parent.resolve() == interpreter.parent.resolve():
        return f"segsweep-{module}"
    return f"{shlex.quote(str(interpreter))} -m segsweep.{module}"


def next_commands(run_dir: Path) -> list[str]:
    """How to evaluate the run and predict with it, ready to copy: Hydra needs the dir quoted, its name holds ``=``
    and ``,``."""
    checkpoint = "ckpt_path=" + f"\"'{run_dir}'\""
    return [
        f"evaluate: {command('eval')} {checkpoint}",
        f"predict:  {command('predict')} {checkpoint} input=generate",
    ]


def results_line(metrics: dict[str, float]) -> str:
    """The test metrics, rounded to what they mean, per-class IoU last."""
    names = sorted((name for name in metrics if name.startswith("test/")), key=lambda name: (name.count("/"), name))
    return "test: " + "  ".join(f"{name.removeprefix('test/')} {significant(metrics[name])}" for name in names)
