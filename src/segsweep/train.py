"""Training entry point: ``python -m segsweep.train`` / ``segsweep-train`` (a Hydra app)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep.app.build import build_module, class_weights, instantiate_all
from segsweep.app.config import CONFIG_DIR, register_resolvers, validate
from segsweep.app.launch import adapt_to_launcher, in_multirun
from segsweep.runs.callbacks import MetricsFile
from segsweep.runs.checkpoint import AtomicCheckpointIO, resolve_checkpoint
from segsweep.runs.record import mark_failed, record_path

log = logging.getLogger(__name__)
# Here, not in main(): parallel launchers resolve the job's config in worker processes that only import this module.
register_resolvers()


def fit_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint ``fit`` resumes from: the run's own last.ckpt, a given file, or a given run dir's last.ckpt."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("resume") == "auto":  # e.g. a SLURM job requeued after its time ran out
        return str(last) if last.is_file() else None
    if cfg.get("resume"):
        return str(last)
    if cfg.get("ckpt_path"):
        return str(resolve_checkpoint(cfg.ckpt_path, "last.ckpt"))
    return None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns the final metrics."""
    datamodule = validate(cfg)
    plugins = adapt_to_launcher(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    # Parallel launchers reuse processes: seed every job afresh (seed_everything also resets workers' seeds).
    pl.seed_everything(cfg.seed, workers=True)
    datamodule.setup("fit")
    weights = class_weights(cfg, datamodule)
    module = build_module(cfg, datamodule, weights)
    callbacks = instantiate_all(cfg.get("callbacks"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO(), *plugins],
    )
    metrics_file = next((callback for callback in callbacks if isinstance(callback, MetricsFile)), None)
    if metrics_file is not None and weights is not None:
        metrics_file.record("class_weights", dict(zip(datamodule.class_names, weights.tolist())))
        log.info("class weights (%s): %s", cfg.loss.class_weights, metrics_file.extra["class_weights"])

    trainer.fit(module, datamodule=datamodule, ckpt_path=fit_checkpoint(cfg))
    has_best = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path
    trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None)
    return {name: float(value) for name, value in trainer.callback_metrics.items()} | {
        "val/mIoU_best": float(module.val_miou_best.compute()) if module.val_miou_best.update_called else math.nan
    }


def _record_failure(cfg: DictConfig, error: Exception) -> None:
    """Mark the run failed in metrics.json, also when it failed before training began (a completed run keeps its results)."""
    if HydraConfig.initialized():
        run_dir = HydraConfig.get().runtime.output_dir
        mark_failed(record_path(run_dir), OmegaConf.to_container(cfg, resolve=False), f"{type(error).__name__}: {error}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` for hyperparameter sweepers."""
    try:
        metrics = train(cfg)
    except Exception as error:
        _record_failure(cfg, error)
        if not in_multirun():
            raise
        # One failing job must not end the sweep: it is recorded (metrics.json) and reported.
        log.exception("job failed: %s", error)
        return math.nan
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
