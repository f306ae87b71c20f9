"""Training entry point: ``python -m segsweep.train`` / ``segsweep-train`` (a Hydra app).

Hydra composes the config; ``app.lifecycle`` decides what the command does to its run dir (a new run, a continued
one, a refusal, a skipped or failed job) and checks the config (``app.validation``); ``train`` below fits, tests the
best checkpoint and returns the metrics.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from segsweep.app.config import CONFIG_DIR
from segsweep.app.preflight import checked_command
from segsweep.app.resolvers import register_resolvers
from segsweep.runs.console import quiet_known_noise

if TYPE_CHECKING:
    from segsweep.data.contract import SegmentationData

log = logging.getLogger(__name__)
# Here, not in main(): parallel launchers resolve the job's config in worker processes that only import this module.
register_resolvers()
quiet_known_noise()  # before Hydra composes: the warnings of composing are known noise too


def train(cfg: DictConfig, datamodule: SegmentationData, resume_overrides: list[str] | None = None) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns the final metrics."""
    # The job's stack, imported by the job: a multirun's launching process runs none, and importing Lightning there
    # (6 s) would delay the start of the worker processes that import it again (BENCHMARKS.md, the default sweep).
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelSummary, ProgressBar

    from segsweep.app.banner import end_line, next_commands, results_line, run_summary, start_lines
    from segsweep.app.build import build_module, class_weights, instantiate_all
    from segsweep.app.gpu_slots import gpu_slot
    from segsweep.app.launch import adapt_to_launcher, in_multirun
    from segsweep.app.pruning import trial_pruning, was_pruned
    from segsweep.app.resume import fit_checkpoint, run_threads
    from segsweep.runs.callbacks.metrics_file import MetricsFile
    from segsweep.runs.checkpoint import AtomicCheckpointIO
    from segsweep.runs.choices import group_choices
    from segsweep.runs.cli import configure_torch
    from segsweep.runs.files import remove_orphan_temps

    plugins = adapt_to_launcher(cfg)
    run_dir = Path(cfg.paths.output_dir)
    threads = configure_torch(run_threads(cfg, run_dir, resume_overrides is not None), multirun=in_multirun())
    # Parallel launchers reuse processes: seed every job afresh (seed_everything also resets workers' seeds).
    pl.seed_everything(cfg.seed, workers=True)
    for directory in (run_dir, run_dir / "checkpoints"):
        for orphan in remove_orphan_temps(directory):  # left by a killed write; nothing else writes here yet
            log.info("removed %s, left by an interrupted write", orphan)
    datamodule.setup("fit")
    weights = class_weights(cfg, datamodule)
    module = build_module(cfg, datamodule, weights)
    # the model summary counts FLOPs on this input (one image of the training size); without it it reports 0
    size = int(datamodule.image_size)
    module.example_input_array = torch.zeros(1, int(cfg.model.get("in_channels", 3)), size, size)
    callbacks = [*instantiate_all(cfg.get("callbacks")), *trial_pruning(cfg, run_dir)]
    quiet = in_multirun() and cfg.get("quiet_jobs", True)
    if quiet:  # a multirun prints one line per finished job; the job's progress is in its log (EpochLines)
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
        if cfg.trainer.get("enable_model_summary", True):  # the plain summary logs (to the job's log); rich prints
            callbacks.append(ModelSummary())
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=instantiate_all(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO(), *plugins],
        **({"enable_progress_bar": False} if quiet else {}),
    )
    for line in start_lines(run_dir, run_summary(cfg, group_choices(), trainer.strategy.root_device, size)):
        log.info(line)
    metrics_file = next((callback for callback in callbacks if isinstance(callback, MetricsFile)), None)
    if metrics_file is not None:
        metrics_file.threads_chosen(threads)
        metrics_file.gpu_slot_claimed(gpu_slot())
        if resume_overrides is not None:
            metrics_file.resuming(resume_overrides)
    if weights is not None:
        used = dict(zip(datamodule.class_names, weights.tolist()))
        if metrics_file is not None:
            metrics_file.weights_used(used)
        log.info("class weights (%s): %s", cfg.loss.class_weights, used)

    trainer.fit(module, datamodule=datamodule, ckpt_path=fit_checkpoint(cfg))
    has_best = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path
    if not was_pruned(run_dir):  # a trial its search's pruner stopped (app.pruning) is not tested
        # Lightning's test table prints every float in full: one rounded line instead
        trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()} | {
        "val/mIoU_best": float(module.val_miou_best.compute()) if module.val_miou_best.update_called else math.nan
    }
    log.info(results_line(metrics))
    log.info(end_line(run_dir, metrics))
    for line in next_commands(run_dir):
        log.info(line)
    return metrics


@checked_command("train", "train")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` (a list of values for a list of metrics) for hyperparameter sweepers."""
    from segsweep.app.lifecycle import training_command  # the job's stack: see train()

    return training_command(cfg, train)


if __name__ == "__main__":
    main()
