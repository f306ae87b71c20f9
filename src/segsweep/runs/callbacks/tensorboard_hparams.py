"""The TensorBoard HPARAMS callback: after testing, the flattened config and config-group choices -> final metrics."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from segsweep.runs.choices import recorded_choices


class TensorBoardHparams(pl.Callback):
    """After testing, fills TensorBoard's HPARAMS tab: flattened config -> final metrics."""

    def __init__(
        self,
        metrics: tuple[str, ...] = ("val/mIoU_best", "test/mIoU", "test/pixel_acc", "test/boundary_f1"),
        per_class: bool = True,
        dirpath: str | None = None,
    ) -> None:
        self.metrics, self.per_class, self.dirpath = tuple(metrics), per_class, dirpath

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger) or trainer.global_rank != 0:
            return
        final = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name in self.metrics or (self.per_class and name.startswith("test/iou/"))
        }
        best = getattr(pl_module, "val_miou_best", None)
        if "val/mIoU_best" in self.metrics and best is not None and best.update_called:
            final["val/mIoU_best"] = float(best.compute())
        config = {key: value for key, value in pl_module.hparams.get("config", {}).items() if key not in ("hydra", "paths")}
        # `loss: weighted_ce`: its parameters alone (segsweep...CrossEntropyLoss) do not tell ce from weighted_ce
        config |= {f"choice/{group}": choice for group, choice in recorded_choices(self.dirpath).items()}
        # A prefix keeps these single points out of the training curves of the same names.
        trainer.logger.log_hyperparams(config, {f"hp/{name}": value for name, value in sorted(final.items())})
        trainer.logger.save()
