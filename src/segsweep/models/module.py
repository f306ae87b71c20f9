"""The LightningModule: network + loss + optimizer + metrics + logging."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MetricCollection

from segsweep.data.classes import DatasetClasses
from segsweep.inference import sliding_window_inference
from segsweep.models.finetune import build_optimizer, check_fine_tuning, fine_tuning_record, set_encoder_trainable
from segsweep.models.image_counts import ImageIntersectionUnion
from segsweep.models.losses.utils import checks_on_host
from segsweep.models.metrics import BoundaryF1, ConfusionMatrix, dice_from_confusion, iou_from_confusion, pixel_accuracy
from segsweep.models.surface_metrics import SurfaceMetrics

STAGES = ("val", "test")
# torch.compile's modes: reduce-overhead replays CUDA graphs, max-autotune also searches kernel configurations
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def stage_metrics(
    classes: DatasetClasses, boundary_tolerance: int, boundary_reduction: Literal["per_image", "pooled"] = "per_image"
) -> MetricCollection:
    """Dataset-level metrics of one stage: one confusion matrix (IoU and pixel accuracy come from it) and boundary F1."""
    boundary_f1 = BoundaryF1(
        classes.num_classes, tolerance=boundary_tolerance, ignore_index=classes.ignore_index, reduction=boundary_reduction
    )
    return MetricCollection(
        {
            "confusion": ConfusionMatrix(classes.num_classes, ignore_index=classes.ignore_index),
            "boundary_f1": boundary_f1,
        },
        compute_groups=False,
    )


def metric_names(class_names: Sequence[str]) -> list[str]:
    """Every metric a run logs, e.g. for choosing ``optimized_metric``."""
    per_class = [f"{metric}/{name}" for metric in ("iou", "dice") for name in class_names]
    per_stage = ["loss", "mIoU", "mDice", "pixel_acc", "boundary_f1", *per_class]
    return ["train/loss", "val/mIoU_best", *(f"{stage}/{name}" for stage in STAGES for name in per_stage)]


def _nonfinite_message(loss: float, step: int, epoch: int, batch: int) -> str:
    return (
        f"loss is {loss} at step {step} (epoch {epoch}, batch {batch}): "
        "training stopped instead of training on it; lower optimizer.lr or check loss settings"
    )


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` with ``loss``; logs ``<stage>/loss``, ``/mIoU``, ``/iou/<class>``, ``/mDice``, ``/dice/<class>``,
    ``/pixel_acc``, ``/boundary_f1``; with ``surface_metrics``, ``test/hd95/<class>`` and ``test/nsd/<class>`` too.

    After each val/test epoch, ``confusion[stage]`` holds that epoch's [true, predicted] pixel counts.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        classes: DatasetClasses | Mapping[str, Any],
        scheduler: Callable[..., Any] | None = None,
        boundary_tolerance: int = 2,
        boundary_reduction: Literal["per_image", "pooled"] = "per_image",
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        config: dict[str, Any] | None = None,
        inference_roi: int | None = None,
        inference_overlap: float = 0.25,
        inference_mode: str = "gaussian",
        inference_tile_batch: int = 16,
        surface_metrics: bool = False,
        nsd_tolerance: float = 2.0,
        encoder_lr_scale: float = 1.0,
        freeze_encoder_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.classes = classes if isinstance(classes, DatasetClasses) else DatasetClasses.from_dict(classes)
        # Only plain containers go into the checkpoint, so it loads with weights_only=True.
        self.save_hyperparameters({"config": config or {}, "classes": self.classes.to_dict()})
        self.net, self.loss = net, loss
        check_fine_tuning(net, encoder_lr_scale, freeze_encoder_epochs)
        # fine-tuning a pretrained encoder (models/finetune.py): its own lr, frozen for the first epochs
        self.encoder_lr_scale, self.freeze_encoder_epochs = encoder_lr_scale, freeze_encoder_epochs
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"module.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
        self.channels_last, self.compile, self.compile_mode = channels_last, compile, compile_mode
        # [loss, step, epoch, batch] of the first non-finite training loss on a GPU (NaN step: none yet); see _check_loss
        self.register_buffer("first_nonfinite", torch.full((4,), math.nan), persistent=False)
        # val/test on whole images: sliding windows of this size, blended as segsweep.predict does (None: one pass)
        self.inference_roi, self.inference_overlap = inference_roi, inference_overlap
        self.inference_mode, self.inference_tile_batch = inference_mode, inference_tile_batch
        self.metrics = nn.ModuleDict(
            {stage: stage_metrics(self.classes, boundary_tolerance, boundary_reduction) for stage in STAGES}
        )
        self.confusion: dict[str, Tensor] = {}
        # per test image: what the report's test-set variance is estimated from; set after each test epoch
        self.image_counts = ImageIntersectionUnion(self.classes.num_classes, self.classes.ignore_index)
        self.test_image_counts: tuple[Tensor, Tensor] | None = None
        # per test image HD95 and NSD [images, C], on the CPU (scipy): test only, as it costs (BENCHMARKS.md)
        surface = SurfaceMetrics(self.classes.num_classes, nsd_tolerance, self.classes.ignore_index) if surface_metrics else None
        self.surface = surface
        self.test_surface: tuple[Tensor, Tensor] | None = None
        self.val_miou_best = MaxMetric()
        self.val_miou_best.persistent(True)  # a resumed run keeps its best so far
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    def configure_model(self) -> None:
        if self.compile and not isinstance(self.net, torch._dynamo.eval_frame.OptimizedModule):
            self.net = torch.compile(self.net, mode=self.compile_mode)

    def forward(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    @property
    def fine_tuning(self) -> dict[str, Any]:
        """The fine-tuning settings and input normalisation, as the run's manifest records them."""
        return fine_tuning_record(self.net, self.encoder_lr_scale, self.freeze_encoder_epochs)

    def on_train_epoch_start(self) -> None:
        # decided from the epoch alone, so a resumed run freezes and unfreezes where an uninterrupted one does
        set_encoder_trainable(self.net, self.current_epoch, self.freeze_encoder_epochs)
        # a loss scheduled over epochs (loss=boundary) takes the epoch from the trainer: a resumed run continues it
        set_epoch = getattr(self.loss, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.current_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        loss = self.loss(self(images), masks)
        self._check_loss(loss, batch_idx)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=images.shape[0])
        return loss

    def _check_loss(self, loss: Tensor, batch_idx: int) -> None:
        """Stop on a non-finite loss. On the CPU at once; on a GPU asking would make every step wait for the device,
        so the first such step is noted there (no host synchronisation) and raised before the epoch's validation."""
        if checks_on_host(loss):
            if not torch.isfinite(loss):
                raise FloatingPointError(_nonfinite_message(loss.item(), self.global_step, self.current_epoch, batch_idx))
            return
        self.note_nonfinite(loss, batch_idx)

    def note_nonfinite(self, loss: Tensor, batch_idx: int) -> None:
        """Keep ``loss`` and its step in ``first_nonfinite`` if it is the first non-finite one, all on its device."""
        first = self.first_nonfinite
        new = ~torch.isfinite(loss.detach()) & first[1].isnan()
        values = (loss.detach().float(), self.global_step, self.current_epoch, batch_idx)
        first.copy_(torch.stack([torch.where(new, value, first[i]) for i, value in enumerate(values)]))

    def raise_noted_nonfinite(self) -> None:
        """The GPU's noted non-finite loss (``note_nonfinite``) as the CPU raises it; one synchronisation an epoch."""
        loss, step, epoch, batch = self.first_nonfinite.tolist()
        if not math.isnan(step):
            raise FloatingPointError(_nonfinite_message(loss, int(step), int(epoch), int(batch)))

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.raise_noted_nonfinite()

    def on_train_epoch_end(self) -> None:
        self.raise_noted_nonfinite()

    def whole_image_logits(self, images: Tensor) -> Tensor:
        """Logits of whole images: by sliding windows of ``inference_roi`` when set (full-resolution numbers, the
        same inference as segsweep.predict), else one forward pass."""
        if self.inference_roi is None:
            return self(images)
        return sliding_window_inference(
            images,
            self,
            self.inference_roi,
            overlap=self.inference_overlap,
            mode=self.inference_mode,
            tile_batch=self.inference_tile_batch,
        )

    def _evaluate(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        images, masks = batch
        logits = self.whole_image_logits(images)
        self.log(f"{stage}/loss", self.loss(logits, masks), on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        predictions = logits.argmax(dim=1)
        self.metrics[stage].update(predictions, masks)
        if stage == "test":
            self.image_counts.update(predictions, masks)
            if self.surface is not None:
                self.surface.update(predictions, masks)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _log_epoch_metrics(self, stage: str) -> Tensor:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        confusion = values["confusion"]
        self.confusion[stage] = confusion.detach().cpu().long()
        iou, dice = iou_from_confusion(confusion), dice_from_confusion(confusion)
        logged = {f"{stage}/pixel_acc": pixel_accuracy(confusion), f"{stage}/boundary_f1": values["boundary_f1"]}
        logged.update({f"{stage}/iou/{name}": iou[i] for i, name in enumerate(self.classes.names)})
        logged.update({f"{stage}/dice/{name}": dice[i] for i, name in enumerate(self.classes.names)})
        logged[f"{stage}/mDice"] = dice.nanmean()
        self.log_dict(logged)
        miou = iou.nanmean()
        self.log(f"{stage}/mIoU", miou, prog_bar=True)
        return miou

    def on_validation_epoch_end(self) -> None:
        miou = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.val_miou_best.update(miou)
        self.log("val/mIoU_best", self.val_miou_best.compute() if self.val_miou_best.update_called else miou)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        intersection, union = self.image_counts.compute()
        self.test_image_counts = (intersection.cpu(), union.cpu())
        self.image_counts.reset()
        if self.surface is not None:
            hd95, nsd = (values.cpu() for values in self.surface.compute())
            self.surface.reset()
            self.test_surface = (hd95, nsd)
            # each class's mean over the images whose truth has it (NaN elsewhere; NaN if no image has it)
            for name, values in (("hd95", hd95), ("nsd", nsd)):
                means = values.nanmean(dim=0).float()
                self.log_dict({f"test/{name}/{cls}": means[i] for i, cls in enumerate(self.classes.names)})

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_factory, self.net, self.parameters(), self.encoder_lr_scale)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": "epoch"},
        }
