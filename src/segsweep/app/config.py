"""Where the Hydra configs live, our OmegaConf resolvers, and validation of a composed config before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep.app.search import resumable_seed
from segsweep.models.module import metric_names


def _config_dir() -> Path:
    """``conf/`` of the source tree (editable install), or the copy shipped inside a wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"segsweep: no Hydra configs found beside {package} (looked for conf/train.yaml)")


CONFIG_DIR = str(_config_dir())


def job_dirname(override_dirname: str, job_num: int | str) -> str:
    """A multirun job's directory name: its overrides (``loss=dice,seed=2``), or its number if none."""
    return override_dirname or str(job_num)


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
        "run_dir": run_dir,
        "deterministic_default": deterministic_default,
        "resumable_seed": resumable_seed,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)



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
    return datamodule
