"""Pruning of an Optuna trial from inside its job: each validation reported, and a stop when the pruner says so.

``optimized_metric`` goes to the trial after every validation; the study's pruner is the sweeper's ``pruner``.

The sweeper gives each job its trial number as ``hydra.job.env_set.SEGSWEEP_TRIAL``; the storage, study and pruner
are the job's own ``hydra.sweeper`` node. Rank 0 reports and asks; every rank stops (the answer is broadcast). A
pruned run is recorded ``pruned`` in metrics.json and not tested; the sweeper then tells the study PRUNED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep.app.search import TRIAL_KEY, open_storage
from segsweep.runs.record import RecordError, load_record, record_path, write_record


class TrialPruning(pl.Callback):
    """Reports ``monitor`` to trial ``number`` of the study after each validation; stops the fit when it is pruned."""

    def __init__(self, run_dir: str, storage: str, study_name: str, number: int, pruner: dict[str, Any], monitor: str) -> None:
        self.run_dir, self.storage, self.study_name, self.number = run_dir, storage, study_name, int(number)
        self.pruner, self.monitor = pruner, monitor
        self.pruned: str | None = None
        self._trial: Any = None  # opened on rank 0 at the first validation (after a DDP spawn)

    def _open(self) -> Any:
        import optuna

        study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage), pruner=instantiate(self.pruner))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        return optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        why = None
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and value is not None:
            self._trial = self._trial or self._open()
            self._trial.report(float(value), trainer.current_epoch)
            if self._trial.should_prune():
                # epochs as every record counts them, from 1 (the trial's step is Lightning's epoch, from 0)
                epoch = trainer.current_epoch + 1
                why = f"pruned at epoch {epoch} ({self.monitor}={float(value):.4g}) by {self.pruner['_target_']}"
        why = trainer.strategy.broadcast(why, src=0)
        if why is not None:
            self.pruned, trainer.should_stop = why, True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned is not None and trainer.is_global_zero:  # after MetricsFile's own "completed"
            path = record_path(self.run_dir)
            write_record(path, {**load_record(path), "status": "pruned", "error": self.pruned})


def trial_pruning(cfg: DictConfig, run_dir: Path) -> list[TrialPruning]:
    """The pruning callback of a job of a pruned Optuna search; none in any other run."""
    if not HydraConfig.initialized():
        return []
    hydra = HydraConfig.get()
    number, sweeper = hydra.job.env_set.get(TRIAL_KEY), hydra.sweeper
    if number is None or sweeper.get("pruner") is None or not cfg.get("optimized_metric"):
        return []
    pruner = OmegaConf.to_container(sweeper.pruner, resolve=True)
    return [TrialPruning(str(run_dir), sweeper.storage, sweeper.study_name, int(number), pruner, str(cfg.optimized_metric))]


def was_pruned(run_dir: Path) -> bool:
    """Whether the pruner stopped this run (its metrics.json says so: true under DDP spawn too)."""
    try:
        return load_record(record_path(run_dir)).get("status") == "pruned"
    except RecordError:
        return False
