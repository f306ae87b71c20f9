"""Training entry point: ``python -m segsweep.train`` / ``segsweep-train`` (a Hydra app)."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelSummary, ProgressBar

from segsweep.app.banner import end_line, eval_line, results_line, run_summary, start_lines
from segsweep.app.build import build_module, class_weights, instantiate_all
from segsweep.app.config import CONFIG_DIR, register_resolvers, validate
from segsweep.app.launch import adapt_to_launcher, group_choices, in_multirun
from segsweep.app.preflight import checked_command
from segsweep.app.pruning import trial_pruning, was_pruned
from segsweep.app.resume import continue_config, resume_selected
from segsweep.app.rundir import is_later_command, reject
from segsweep.app.search import objective
from segsweep.app.tracking import check_loggers
from segsweep.runs.callbacks import MetricsFile
from segsweep.runs.checkpoint import AtomicCheckpointIO, resolve_checkpoint
from segsweep.runs.cli import USER_ERRORS, configure_torch, one_line
from segsweep.runs.console import route_to_run_log
from segsweep.runs.files import remove_orphan_temps
from segsweep.runs.record import RecordError, load_record, mark_failed, record_path, recorded_value, was_recorded

log = logging.getLogger(__name__)
# Here, not in main(): parallel launchers resolve the job's config in worker processes that only import this module.
register_resolvers()


class CompletedRun(ValueError):
    """A command that is not a resume, into the dir of a completed run: its results stay as they are."""


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


def _completed_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = load_record(record_path(run_dir)) if record_path(run_dir).is_file() else None
    except RecordError:
        return None
    return record if record and record.get("status") == "completed" else None


def prepare(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, Any, list[str] | None]:
    """The config this command trains with, its datamodule and, when it continues a run, the overrides it applied.

    A run dir that already holds a run is continued with that run's own config (app.resume). Every problem with the
    input is raised here, before any work.
    """
    later, resuming = is_later_command(run_dir), resume_selected(cfg, run_dir)
    if later and not resuming and _completed_record(run_dir) is not None:
        raise CompletedRun(
            f"{run_dir} holds a completed run: continue it with resume=true (e.g. trainer.max_epochs=<more>), "
            "or train into a new hydra.run.dir"
        )
    applied = None
    if later or resuming:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        continued = continue_config(cfg, run_dir, overrides)
        if continued is not None:
            cfg, applied = continued
    check_loggers(cfg)  # a tracker without its package or server: one line before any work
    return cfg, validate(cfg), applied


def train(cfg: DictConfig, datamodule: Any, resume_overrides: list[str] | None = None) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns the final metrics."""
    plugins = adapt_to_launcher(cfg)
    configure_torch(cfg.get("threads"))
    # Parallel launchers reuse processes: seed every job afresh (seed_everything also resets workers' seeds).
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
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
    for line in start_lines(run_dir, run_summary(cfg, group_choices(), trainer.strategy.root_device)):
        log.info(line)
    metrics_file = next((callback for callback in callbacks if isinstance(callback, MetricsFile)), None)
    if metrics_file is not None and resume_overrides is not None:
        metrics_file.resuming(resume_overrides)
    if metrics_file is not None and weights is not None:
        metrics_file.record("class_weights", dict(zip(datamodule.class_names, weights.tolist())))
        log.info("class weights (%s): %s", cfg.loss.class_weights, metrics_file.extra["class_weights"])

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
    log.info(eval_line(run_dir))
    return metrics


def _record_failure(run_dir: Path, cfg: DictConfig, error: BaseException, own_run: bool = False) -> None:
    """Mark the run failed in metrics.json; a run completed by an earlier command keeps its results and gets a
    ``failed_attempts`` entry (``own_run``: this command completed it, so its own later failure counts)."""
    if was_recorded(error) or int(os.environ.get("RANK", "0")) != 0:  # recorded by MetricsFile, or not rank 0
        return
    config = OmegaConf.to_container(cfg, resolve=False)
    mark_failed(record_path(run_dir), config, f"{type(error).__name__}: {error}", own_run=own_run)


def _refuse(run_dir: Path, cfg: DictConfig, error: BaseException) -> float:
    """Bad input, found before any work: one line naming the key, exit code 1 (app.rundir.reject).

    A rejected first command leaves no run dir behind; one into an existing run's dir is recorded beside its results.
    """
    if in_multirun():  # the sweep goes on; the job's metrics.json tells the report why it failed
        _record_failure(run_dir, cfg, error)
        log.error("job failed: %s", one_line(error))
        return math.nan
    if is_later_command(run_dir):
        _record_failure(run_dir, cfg, error)
    reject(run_dir, error, lambda line: print(f"train failed: {line}", file=sys.stderr))


@checked_command("train", "train")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` (a list of values for a list of metrics) for hyperparameter sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    route_to_run_log(console=not (in_multirun() and cfg.get("quiet_jobs", True)))
    metric = cfg.get("optimized_metric")
    try:
        cfg, datamodule, resume_overrides = prepare(cfg, run_dir)
    except CompletedRun as error:
        record = _completed_record(run_dir)
        if in_multirun() and record is not None:  # a sweep run again into its own dir: its finished jobs are kept
            log.warning("skipped, already completed: %s", run_dir)
            return objective(lambda name: recorded_value(record, name), metric)
        return _refuse(run_dir, cfg, error)
    except USER_ERRORS as error:
        return _refuse(run_dir, cfg, error)
    completed_before = _completed_record(run_dir) is not None
    try:
        metrics = train(cfg, datamodule, resume_overrides)
    except Exception as error:
        _record_failure(run_dir, cfg, error, own_run=not completed_before)
        if not in_multirun():
            raise
        # One failing job must not end the sweep: it is recorded (metrics.json) and reported.
        log.exception("job failed: %s", error)
        return math.nan
    return objective(metrics.get, metric)


if __name__ == "__main__":
    main()
