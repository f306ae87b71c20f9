"""The prediction-images callback: input, ground truth and prediction of fixed val images in TensorBoard."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from segsweep.inference import to_unit_float
from segsweep.runs.visualize import comparison_grid


class PredictionImages(pl.Callback):
    """Every ``every_n_epochs``, logs input / ground truth / prediction of fixed val scenes to TensorBoard."""

    def __init__(self, every_n_epochs: int = 5, num_images: int = 6) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError("callbacks.prediction_images: every_n_epochs and num_images must be >= 1")
        self.every_n_epochs, self.num_images = every_n_epochs, num_images

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0 or last_epoch or trainer.should_stop
        if trainer.sanity_checking or not due or not isinstance(trainer.logger, TensorBoardLogger) or trainer.global_rank != 0:
            return
        images, masks = trainer.datamodule.sample_images("val", self.num_images)
        with torch.inference_mode():
            predictions = pl_module(to_unit_float(images).to(pl_module.device)).argmax(dim=1)
        classes = pl_module.classes
        grid = comparison_grid(images, masks, predictions, classes.overlay_colors, classes.names)
        trainer.logger.experiment.add_image("val/predictions", grid, global_step=trainer.global_step)
