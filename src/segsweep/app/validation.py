"""Validation of a composed training config before any work: one line naming the offending key, exit code 1.

A config is checked in three places, each by what it can see:

==============  =============================================  =====================================================
module          when                                           what it checks
==============  =============================================  =====================================================
app/preflight   the command line, before Hydra runs            that the overrides compose: unknown keys, unknown
                                                               group options, malformed overrides (Hydra's errors)
app/typecheck   the composed config, first thing in a command  each value against the type hint of the parameter
                                                               it configures (every ``_target_`` node, and the
                                                               entry points' own keys)
app/validation  the composed config, after typecheck           values against each other, the data and the machine:
                                                               ranges, classes, sizes, files, the optimizer's own
                                                               checks, memory
==============  =============================================  =====================================================

``validate`` builds one object to check against, the datamodule (``app.build.build_datamodule``: cheap, nothing
generated or read before ``setup``), and returns it so that the command does not build it twice. The optimizer and
scheduler are built on a stand-in parameter and dropped: their own checks (``lr < 0``) run before any data is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep import machine
from segsweep.app.build import build_datamodule
from segsweep.app.resume import fit_checkpoint
from segsweep.app.typecheck import check_types
from segsweep.data.contract import SegmentationData
from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.models.module import metric_names
from segsweep.runs.checkpoint import checked_checkpoint


def validate(cfg: DictConfig) -> SegmentationData:
    """Check ``cfg`` (one line naming the key); returns the datamodule built to check it against, not yet set up.

    The datamodule checks its own keys; what depends on the dataset's classes is checked against them here.
    """
    check_types(cfg)
    model, trainer = cfg.model, cfg.trainer
    if isinstance(cfg.get("threads"), int) and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1 (or auto, or null for torch's default), got {cfg.threads}")
    if trainer.get("max_epochs") is not None and trainer.max_epochs < 1:
        raise ValueError(f"trainer.max_epochs must be >= 1, got {trainer.max_epochs}")
    datamodule = build_datamodule(cfg)
    classes, num_classes = datamodule.classes, model.get("num_classes")
    if num_classes is not None and num_classes != classes.num_classes:
        raise ValueError(
            f"model.num_classes={num_classes} but the data has {classes.num_classes} classes ({', '.join(classes.names)})"
        )
    size_key = "crop_size" if "crop_size" in cfg.data else "image_size"  # a folder's training crops, or the scenes
    depth, size = model.get("depth"), cfg.data.get(size_key)
    if depth is not None and size is not None and size < 2**depth:
        raise ValueError(f"data.{size_key}={size} is smaller than 2**model.depth={2**depth}: lower model.depth or raise the size")
    weights = cfg.loss.get("class_weights")
    if OmegaConf.is_list(weights) and len(weights) != classes.num_classes:
        raise ValueError(f"loss.class_weights has {len(weights)} values but there are {classes.num_classes} classes")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path: {cfg.ckpt_path} does not exist")
    metric = cfg.get("optimized_metric")
    if metric and metric not in metric_names(classes.names):
        raise ValueError(
            f"optimized_metric: {metric!r} is not a metric of a run; choose from {', '.join(metric_names(classes.names))}"
        )
    if cfg.get("resume") not in (True, False, None, "auto"):
        raise ValueError(f"resume: expected true, false or auto, got {cfg.resume!r}")
    if cfg.get("resume") is True and not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file():
        raise FileNotFoundError(f"resume=true: {cfg.paths.output_dir} has no checkpoints/last.ckpt to resume from")
    resumed = fit_checkpoint(cfg)
    if resumed is not None and Path(resumed).is_file():  # read again by fit: a file it cannot continue is one line now
        checked_checkpoint(resumed, for_fit=True)
    _check_optimization(cfg)
    _check_memory(datamodule)
    return datamodule


def _check_optimization(cfg: DictConfig) -> None:
    """The optimizer and scheduler built on a stand-in parameter: their own checks (lr < 0, ...) run before data is made."""
    group = "optimizer"
    try:
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        group = "scheduler"
        if cfg.get("scheduler"):
            instantiate(cfg.scheduler)(optimizer)
    except (InstantiationException, ValueError, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ is not None else error
        message = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        node = cfg[group]
        # torch's messages show the bad value ("Invalid learning rate: -1"), not the key: find the key holding it
        keys = [key for key, value in node.items() if not str(key).startswith("_") and _shows(value, message)]
        where = f"{group}.{keys[0]}={node[keys[0]]}" if len(keys) == 1 else f"{group} ({node.get('_target_')})"
        raise ValueError(f"{where}: {message}") from None


def _shows(value: Any, message: str) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and f": {value}" in message


def _check_memory(datamodule: SegmentationData) -> None:
    """Generated scenes live in memory (uint8 image 3xHxW + mask HxW each): refuse splits this machine cannot hold."""
    if not isinstance(datamodule, SceneDataModule):  # a folder is read lazily, image by image
        return
    sizes, side = datamodule.split_sizes, datamodule.image_size
    needed = sum(sizes.values()) * 4 * side * side
    available = machine.available_memory()
    if available is not None and needed > available:
        split = max(sizes, key=sizes.__getitem__)
        raise ValueError(
            f"data.{split}_size={sizes[split]}: the scenes need {needed / 1e9:.1f} GB in memory ({sum(sizes.values())} images "
            f"of {side}x{side} px, train+val+test) but {available / 1e9:.1f} GB is available - lower data.{split}_size "
            f"or data.image_size"
        )
