"""Where the Hydra configs live, our OmegaConf resolvers, and validation of a composed config before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep import machine
from segsweep.app.naming import dir_name, job_dirname, run_suffix
from segsweep.app.rundir import hydra_records
from segsweep.app.typecheck import check_types
from segsweep.data.datamodule import SceneDataModule
from segsweep.models.module import metric_names


def _config_dir() -> Path:
    """``conf/`` of the source tree (editable install), or the copy shipped inside a wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"segsweep: no Hydra configs found beside {package} (looked for conf/train.yaml)")


CONFIG_DIR = str(_config_dir())


def run_dir(task_name: str, ckpt_path: str | None, default: str) -> str:
    """Training given a run directory as ``ckpt_path`` continues it in place; anything else gets a new dir
    (eval and predict read a run dir but never write into it)."""
    return ckpt_path if task_name == "train" and ckpt_path and Path(ckpt_path).is_dir() else default


def deterministic_default() -> bool | str:
    """True on CPU (bit-identical reruns); 'warn' on GPU, where some kernels (CE's 2-D NLL) have no deterministic version."""
    return "warn" if torch.cuda.is_available() else True


def register_resolvers() -> None:
    """Our OmegaConf resolvers; every entry point calls this before Hydra composes its config."""
    resolvers = {
        "job_dirname": job_dirname,
        "run_suffix": run_suffix,
        "dir_name": dir_name,
        "run_dir": run_dir,
        "deterministic_default": deterministic_default,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("hydra_records"):
        # cached: Hydra reads hydra.output_subdir twice and both reads must name the same directory
        OmegaConf.register_new_resolver("hydra_records", hydra_records, use_cache=True)


def _instantiate_data(data: DictConfig) -> Any:
    """The datamodule of ``data`` (cheap: nothing is generated or read before ``setup``), its own checks' errors unwrapped."""
    for key in data:
        if OmegaConf.is_missing(data, key):
            raise ValueError(f"data.{key} is required: add data.{key}=<value> to the command (e.g. data.root=/path/to/dataset)")
    try:
        return instantiate(data)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ValueError, FileNotFoundError)):
            raise error.__cause__ from None
        raise


def validate(cfg: DictConfig) -> Any:
    """Fail before any work with one line naming the offending key; returns the (not yet set up) datamodule.

    The datamodule checks its own keys; what depends on the dataset's classes is checked against them here.
    """
    check_types(cfg)
    model, trainer = cfg.model, cfg.trainer
    if cfg.get("threads") is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1 (or null for torch's default), got {cfg.threads}")
    if trainer.get("max_epochs") is not None and trainer.max_epochs < 1:
        raise ValueError(f"trainer.max_epochs must be >= 1, got {trainer.max_epochs}")
    if cfg.data.get("root"):  # a folder dataset: absolute, so eval/predict of the run work from any directory
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    datamodule = _instantiate_data(cfg.data)
    classes = datamodule.classes
    num_classes = model.get("num_classes")
    if getattr(datamodule, "classes_from_data", False) and num_classes is not None and num_classes != classes.num_classes:
        # the dataset's classes.yaml decides; the saved config (and so every checkpoint) records the real count
        cfg.model.num_classes = num_classes = classes.num_classes
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


def _check_memory(datamodule: Any) -> None:
    """Generated scenes live in memory (uint8 image 3xHxW + mask HxW each): refuse splits this machine cannot hold."""
    if not isinstance(datamodule, SceneDataModule):
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
