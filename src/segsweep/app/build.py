"""Objects from a composed config: the datamodule, class weights, the LightningModule (also from a checkpoint), callbacks.

Building writes into the config only what follows from the data, so that the saved config (and every checkpoint)
records it: a folder dataset's absolute ``data.root`` and its classes.yaml's ``model.num_classes``. Checking the
config is ``app/validation.py``'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep.data.contract import SegmentationData
from segsweep.models.class_weights import compute_class_weights
from segsweep.models.module import SegmentationModule
from segsweep.runs.allowlist import check_saved_config, renamed_targets
from segsweep.runs.checkpoint import CheckpointError, checked_checkpoint, resolve_checkpoint
from segsweep.runs.cli import one_line, required_line


def build_datamodule(cfg: DictConfig) -> SegmentationData:
    """The datamodule of ``cfg.data`` (cheap: nothing is generated or read before ``setup``), its own checks' errors
    unwrapped; ``cfg`` gets the values that follow from the data (module docstring)."""
    data = cfg.data
    for key in data:
        if OmegaConf.is_missing(data, key):
            raise ValueError(required_line(f"data.{key}"))
    if data.get("root"):  # a folder dataset: absolute, so eval/predict of the run work from any directory
        data.root = str(Path(data.root).expanduser().resolve())
    try:
        datamodule: SegmentationData = instantiate(data)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ValueError, FileNotFoundError)):
            raise error.__cause__ from None
        raise
    classes, num_classes = datamodule.classes, cfg.model.get("num_classes")
    if datamodule.classes_from_data and num_classes is not None and num_classes != classes.num_classes:
        cfg.model.num_classes = classes.num_classes  # the dataset's classes.yaml decides
    return datamodule


def class_weights(cfg: DictConfig, datamodule: SegmentationData) -> torch.Tensor | None:
    """``loss.class_weights`` (a strategy name or a list) as a tensor, from the train split's pixel counts."""
    weights = cfg.loss.get("class_weights")
    if weights is None:
        return None
    strategy = OmegaConf.to_object(weights) if OmegaConf.is_config(weights) else weights
    return compute_class_weights(strategy, datamodule.class_pixel_counts, image_pixel_counts=datamodule.class_image_pixels)


def build_module(cfg: DictConfig, datamodule: SegmentationData, weights: torch.Tensor | None = None) -> SegmentationModule:
    """The LightningModule of a composed config; the classes and their ignore index come from the datamodule."""
    classes = datamodule.classes
    loss_options: dict[str, Any] = {"ignore_index": classes.ignore_index}
    if weights is not None:
        loss_options["class_weights"] = weights
    return SegmentationModule(
        net=instantiate(cfg.model),
        loss=instantiate(cfg.loss, **loss_options),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        classes=classes,
        config=OmegaConf.to_container(cfg, resolve=True),
        **_module_options(cfg, datamodule),
    )


def _module_options(cfg: DictConfig, datamodule: SegmentationData) -> dict[str, Any]:
    """``cfg.module``, plus the datamodule's ``inference_roi`` (a folder dataset: val/test on whole images by sliding windows)."""
    options = dict(cfg.get("module") or {})
    roi = datamodule.inference_roi
    if roi is not None:
        options.setdefault("inference_roi", int(roi))
    return options


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every ``_target_`` node of a config group such as ``callbacks`` or ``logger``."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def load_module(path: str | Path, datamodule: SegmentationData | None = None) -> tuple[SegmentationModule, DictConfig]:
    """Rebuild the module saved in a checkpoint (file or run dir) and load its weights; a failure is one line naming the file."""
    try:
        return _load_module(path, datamodule)
    except (CheckpointError, OSError):  # these name the file already
        raise
    except Exception as error:  # a saved config that does not build (a bad value, a KeyError): name the file
        raise CheckpointError(f"{path}: cannot load this checkpoint ({one_line(error)})") from error


def _load_module(path: str | Path, datamodule: SegmentationData | None) -> tuple[SegmentationModule, DictConfig]:
    path = resolve_checkpoint(path)
    checkpoint = checked_checkpoint(path)
    saved = checkpoint["hyper_parameters"]["config"]
    # a checkpoint from before a class moved names its old path; then instantiating the saved config runs whatever
    # its _target_s name: refuse all but the allowlist first
    saved = renamed_targets(saved)
    check_saved_config(saved, str(path))
    cfg = OmegaConf.create(saved)
    datamodule = datamodule or instantiate(cfg.data)
    build_cfg = cfg.copy()
    for key in ("weights", "weights_backbone", "encoder_weights"):
        if build_cfg.model.get(key) is not None:
            build_cfg.model[key] = None  # the checkpoint's own weights replace them; the file need not exist here
    module = build_module(build_cfg, datamodule, class_weights(cfg, datamodule))
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the network of its config ({str(error).splitlines()[0]})") from error
    return module.eval(), cfg
