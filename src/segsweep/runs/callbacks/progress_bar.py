"""The progress-bar callback: Lightning's rich progress bar with its epochs counted from 1, as the log lines count them."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class EpochProgressBar(RichProgressBar):
    """``Epoch 1/12`` for the first of 12 epochs (Lightning's own bar says ``Epoch 0/11``): one convention for every
    epoch a user reads (log lines, metrics.json, the report)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        # as Lightning pads it: the description keeps its width when the validation bar shows
        return f"{description:{len(self.validation_description)}}"
