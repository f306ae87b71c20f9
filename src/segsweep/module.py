"""The LightningModule: network + loss + optimizer + metrics + logging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from segsweep.metrics import BoundaryF1

IGNORE_INDEX = 255


def stage_metrics(num_classes: int, boundary_tolerance: int) -> MetricCollection:
    """Dataset-level metrics of one stage: per-class IoU (confusion matrix), pixel accuracy, boundary F1."""
    return MetricCollection(
        {
            "iou": MulticlassJaccardIndex(num_classes, average="none", ignore_index=IGNORE_INDEX),
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX),
            "boundary_f1": BoundaryF1(num_classes, tolerance=boundary_tolerance, ignore_index=IGNORE_INDEX),
        },
        compute_groups=False,
    )


def metric_names(class_names: Sequence[str]) -> list[str]:
    """Every metric a run logs, e.g. for choosing ``optimized_metric``."""
    per_stage = ["loss", "mIoU", "pixel_acc", "boundary_f1", *(f"iou/{name}" for name in class_names)]
    return ["train/loss", "val/mIoU_best", *(f"{stage}/{name}" for stage in ("val", "test") for name in per_stage)]


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` with ``loss``; logs ``<stage>/loss``, ``/mIoU``, ``/iou/<class>``, ``/pixel_acc``, ``/boundary_f1``."""

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        class_names: Sequence[str],
        scheduler: Callable[..., Any] | None = None,
        boundary_tolerance: int = 2,
        channels_last: bool = False,
        compile: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Only plain containers go into the checkpoint, so it loads with weights_only=True.
        self.save_hyperparameters({"config": config or {}})
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names)
        self.channels_last, self.compile = channels_last, compile
        self.metrics = nn.ModuleDict({stage: stage_metrics(len(class_names), boundary_tolerance) for stage in ("val", "test")})
        self.val_miou_best = MaxMetric()
        self.val_miou_best.persistent(True)  # a resumed run keeps its best so far
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        if self.compile and not isinstance(self.net, torch._dynamo.eval_frame.OptimizedModule):
            self.net = torch.compile(self.net)

    def forward(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        loss = self.loss(self(images), masks)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}): "
                "training stopped instead of training on it; lower optimizer.lr or check loss settings"
            )
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        images, masks = batch
        logits = self(images)
        self.log(f"{stage}/loss", self.loss(logits, masks), on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        self.metrics[stage].update(logits.argmax(dim=1), masks)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _log_epoch_metrics(self, stage: str) -> Tensor:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        iou = values["iou"]
        logged = {f"{stage}/pixel_acc": values["pixel_acc"], f"{stage}/boundary_f1": values["boundary_f1"]}
        logged.update({f"{stage}/iou/{name}": iou[i] for i, name in enumerate(self.class_names)})
        self.log_dict(logged)
        self.log(f"{stage}/mIoU", iou.mean(), prog_bar=True)
        return iou.mean()

    def on_validation_epoch_end(self) -> None:
        miou = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.val_miou_best.update(miou)
        self.log("val/mIoU_best", self.val_miou_best.compute() if self.val_miou_best.update_called else miou)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": "epoch"},
        }
