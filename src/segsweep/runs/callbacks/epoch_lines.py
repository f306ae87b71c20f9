"""The epoch-lines callback: one log line per epoch (train and val loss, val mIoU, time), a history outside a terminal."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

from segsweep.runs.console import significant

log = logging.getLogger(__name__)


class EpochLines(pl.Callback):
    """One line per epoch in the run's log: train and val loss, val mIoU and the time; outside a terminal the
    progress bar leaves no per-epoch history, and in a terminal the line stays above it."""

    METRICS = ("train/loss", "val/loss", "val/mIoU")

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    # after the epoch's validation, when both the train and the val metrics of the epoch are in
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        values = "  ".join(
            f"{name} {significant(trainer.callback_metrics[name])}" for name in self.METRICS if name in trainer.callback_metrics
        )
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info("epoch %d/%s  %s  (%.1f s)", trainer.current_epoch + 1, epochs, values, time.perf_counter() - self._started)
