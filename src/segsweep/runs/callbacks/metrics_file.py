"""The metrics-file callback: hands a training run's history, test metrics and provenance to ``runs/record.py`` as they come."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segsweep.runs.manifest import manifest, with_resume
from segsweep.runs.record import epochs_from_one, existing_record, record_path, write_run


def failure_text(error: BaseException) -> str:
    """A failure as the record states it: ``<Type>: <message>``; Lightning's SIGTERMException carries no message."""
    if isinstance(error, SIGTERMException):
        return "SIGTERMException: terminated by SIGTERM"
    return f"{type(error).__name__}: {error}"


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {name: float(value) for name, value in sorted(metrics.items()) if name.startswith(prefix)}


class MetricsFile(pl.Callback):
    """Keeps ``metrics.json`` up to date through ``runs/record.py``, which owns its contents and writes it atomically.

    Each history entry counts the optimizer ``steps`` and the training ``images_seen`` so far, so convergence compares
    across samplers (a repeat-factor epoch holds more images than a uniform one) and batch sizes. A failure is written
    here only with what this command knows of the run (its history so far); the command's own handler
    (``app/lifecycle.py``) decides what the failure does to a completed record.
    """

    def __init__(self, dirpath: str) -> None:
        self.path = record_path(dirpath)
        self.history: list[dict[str, float]] = []
        self.test: dict[str, float] = {}
        self.manifest: dict[str, Any] | None = None
        self.classes: dict[str, Any] | None = None
        self.train_pixels: list[int] | None = None
        self.class_weights: dict[str, float] | None = None
        self._fit_done = False
        self._started = time.perf_counter()
        self._elapsed_before = 0.0
        self._images_seen = 0
        self._restored = False
        self._resume_overrides: list[str] | None = None
        self._threads_choice: dict[str, Any] | None = None
        self._gpu_slot: int | None = None

    def resuming(self, overrides: list[str]) -> None:
        """This command continues the run in its dir, with these (allowed) overrides: an entry in the manifest's ``resumes``."""
        self._resume_overrides = list(overrides)

    def threads_chosen(self, choice: dict[str, Any]) -> None:
        """How the command chose its torch threads (``runs.cli.configure_torch``): the manifest's ``threads_choice``."""
        self._threads_choice = dict(choice)

    def gpu_slot_claimed(self, slot: int | None) -> None:
        """Which of its GPU's slots this job's process holds (``app.gpu_slots.claim_gpu``): the manifest's ``gpu_slot``."""
        self._gpu_slot = slot

    def weights_used(self, weights: dict[str, float]) -> None:
        """The class weights the loss uses, by class name (the record's ``class_weights``)."""
        self.class_weights = dict(weights)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, error: str | None = None) -> None:
        """Rank 0 hands what it knows to the record; what it does not know (e.g. the fit history when a spawned DDP
        test runs in fresh processes) ``write_run`` keeps from the file, and this callback adopts."""
        if trainer.global_rank != 0:
            return
        record = write_run(
            self.path,
            status,
            config=pl_module.hparams.get("config", {}),
            history=self.history,
            test=self.test,
            manifest=self.manifest,
            error=error,
            classes=self.classes,
            train_pixels=self.train_pixels,
            class_weights=self.class_weights,
        )
        if record is not None:
            self.history, self.test, self.manifest = record["history"], record["test"], record["manifest"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        classes = getattr(pl_module, "classes", None)
        if classes is not None:
            self.classes = classes.to_dict()
            if trainer.datamodule is not None:
                self.train_pixels = trainer.datamodule.class_pixel_counts.tolist()
        recorded = existing_record(self.path).get("manifest")
        if self.manifest is None and self._resume_overrides is not None:
            self.manifest = recorded  # a run resumed before its first checkpoint has its manifest only in the file
        if self.manifest is None:
            config = pl_module.hparams.get("config", {})
            channels_last = (config.get("module") or {}).get("channels_last")
            fine_tuning = getattr(pl_module, "fine_tuning", None)
            self.manifest = manifest(config.get("seed"), str(pl_module.device), channels_last, fine_tuning, self._gpu_slot)
            if self._threads_choice is not None:
                self.manifest["threads_choice"] = self._threads_choice
        if self._restored or self._resume_overrides is not None:  # the same run, continued by this command
            # the first epoch this command trains, counted from 1 (max_epochs + 1 when the run had finished)
            from_epoch = int(self.history[-1]["epoch"]) + 1 if self.history else 1
            self.manifest = with_resume(self.manifest, recorded, self._resume_overrides or [], from_epoch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        epoch = trainer.current_epoch + 1  # counted from 1, as every epoch a user reads (runs/record.py)
        entry: dict[str, float] = {"epoch": epoch}
        entry.update(_scalars(trainer.callback_metrics, "val/"))
        entry["time_s"] = round(self._elapsed_before + time.perf_counter() - self._started, 3)
        entry["steps"], entry["images_seen"] = trainer.global_step, self._images_seen
        self.history = [old for old in self.history if old["epoch"] != epoch] + [entry]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # every rank trains an equal share of the epoch's draws (samplers.EpochSeededSampler)
        self._images_seen += len(batch[0]) * trainer.world_size

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_done = True
        self.write(trainer, pl_module, "fitted")  # completed only once tested: a rerun finishes a run killed in between

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test = _scalars(trainer.callback_metrics, "test/")
        self.write(trainer, pl_module, "completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # the history so far goes into the failed record; a completed record keeps its results (record.write_run)
        self.write(trainer, pl_module, "failed", failure_text(exception))

    def state_dict(self) -> dict[str, Any]:
        elapsed = self._elapsed_before + time.perf_counter() - self._started
        return {"history": self.history, "elapsed_s": elapsed, "manifest": self.manifest, "images_seen": self._images_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fit_done:  # testing the best checkpoint must not rewind the history to the best epoch
            return
        self.history = epochs_from_one(list(state_dict["history"]))  # checkpoints written before counted from 0
        self._elapsed_before = float(state_dict["elapsed_s"])
        self._images_seen = int(state_dict.get("images_seen", 0))  # 0 in checkpoints written before images were counted
        self.manifest = state_dict.get("manifest")
        self._restored = True
