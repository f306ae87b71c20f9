"""Where the Hydra configs live, our OmegaConf resolvers, and early validation of a composed config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from segsweep.module import metric_names
from segsweep.scenes import CLASS_NAMES
from segsweep.search import resumable_seed


def _config_dir() -> Path:
    """``conf/`` of the source tree (editable install), or the copy shipped inside a wheel."""
    package = Path(__file__).resolve().parent
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
    resolvers = {
        "job_dirname": job_dirname,
        "run_dir": run_dir,
        "deterministic_default": deterministic_default,
        "resumable_seed": resumable_seed,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


def validate(cfg: DictConfig) -> None:
    """Fail before any work with one line naming the offending key."""
    data, model, trainer = cfg.data, cfg.model, cfg.trainer
    for key in ("image_size", "train_size", "val_size", "test_size", "batch_size"):
        value = data.get(key)
        if value is not None and value < 1:
            raise ValueError(f"data.{key} must be >= 1, got {value}")
    if cfg.get("threads") is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1 (or null for torch's default), got {cfg.threads}")
    if trainer.get("max_epochs") is not None and trainer.max_epochs < 1:
        raise ValueError(f"trainer.max_epochs must be >= 1, got {trainer.max_epochs}")
    num_classes = model.get("num_classes")
    if num_classes is not None and num_classes != len(CLASS_NAMES):
        raise ValueError(
            f"model.num_classes={num_classes} but the scenes have {len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)})"
        )
    depth, size = model.get("depth"), data.get("image_size")
    if depth is not None and size is not None and size < 2**depth:
        raise ValueError(f"data.image_size={size} is smaller than 2**model.depth={2**depth}: lower model.depth or raise the size")
    weights = cfg.loss.get("class_weights")
    if OmegaConf.is_list(weights) and len(weights) != len(CLASS_NAMES):
        raise ValueError(f"loss.class_weights has {len(weights)} values but there are {len(CLASS_NAMES)} classes")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path: {cfg.ckpt_path} does not exist")
    metric = cfg.get("optimized_metric")
    if metric and metric not in metric_names(CLASS_NAMES):
        raise ValueError(
            f"optimized_metric: {metric!r} is not a metric of a run; choose from {', '.join(metric_names(CLASS_NAMES))}"
        )
    if cfg.get("resume") not in (True, False, None, "auto"):
        raise ValueError(f"resume: expected true, false or auto, got {cfg.resume!r}")
    if cfg.get("resume") is True and not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file():
        raise FileNotFoundError(f"resume=true: {cfg.paths.output_dir} has no checkpoints/last.ckpt to resume from")
