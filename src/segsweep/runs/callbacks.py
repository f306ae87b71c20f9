"""Lightning callbacks: the metrics file, prediction images and the TensorBoard HPARAMS summary."""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.loggers import TensorBoardLogger

from segsweep.inference import to_unit_float
from segsweep.runs.manifest import manifest, now
from segsweep.runs.record import RecordError, load_record, mark_failed, note_recorded, record_path, write_record
from segsweep.runs.visualize import comparison_grid


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {name: float(value) for name, value in sorted(metrics.items()) if name.startswith(prefix)}


class MetricsFile(pl.Callback):
    """Keeps ``metrics.json`` (status, config, best, test, history) up to date, written atomically.

    Each history entry counts the optimizer ``steps`` and the training ``images_seen`` so far, so convergence compares
    across samplers (a repeat-factor epoch holds more images than a uniform one) and batch sizes.
    """

    def __init__(self, dirpath: str) -> None:
        self.path = record_path(dirpath)
        self.history: list[dict[str, float]] = []
        self.test: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.manifest: dict[str, Any] | None = None
        self._fit_done = False
        self._started = time.perf_counter()
        self._elapsed_before = 0.0
        self._images_seen = 0
        self._restored = False
        self._resume_overrides: list[str] | None = None

    def resuming(self, overrides: list[str]) -> None:
        """This command continues the run in its dir, with these (allowed) overrides: an entry in the manifest's ``resumes``."""
        self._resume_overrides = list(overrides)

    def record(self, key: str, value: Any) -> None:
        """Add a top-level entry (e.g. the class weights used) to the file."""
        self.extra[key] = value

    def best(self) -> dict[str, Any]:
        scored = [entry for entry in self.history if not math.isnan(entry.get("val/mIoU", math.nan))]
        if not scored:
            return {"val/mIoU": None, "epoch": None}
        top = max(scored, key=lambda entry: entry["val/mIoU"])
        return {"val/mIoU": top["val/mIoU"], "epoch": int(top["epoch"])}

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, error: str | None = None) -> None:
        """Rank 0 writes; what this process does not know (e.g. the fit history when a spawned
        DDP test runs in fresh processes) is kept from the file already written."""
        if trainer.global_rank != 0:
            return
        existing = _existing_record(self.path)
        self.history = self.history or existing.get("history", [])
        self.test = self.test or existing.get("test", {})
        self.manifest = self.manifest or existing.get("manifest")
        if self.manifest is not None:
            self.manifest["end_time"] = now()
        content = {
            **existing,
            "status": status,
            "error": error,
            "config": pl_module.hparams.get("config", {}),
            "best": self.best(),
            "test": self.test,
            "history": self.history,
            "manifest": self.manifest,
            **self.extra,
        }
        write_record(self.path, content)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        classes = getattr(pl_module, "classes", None)
        pixel_counts = getattr(trainer.datamodule, "class_pixel_counts", None)
        if classes is not None:
            # the report's "rarest class" is the one with the fewest training pixels
            train_pixels = {"train_pixels": pixel_counts.tolist()} if pixel_counts is not None else {}
            self.record("classes", {**classes.to_dict(), **train_pixels})
        recorded = _existing_record(self.path).get("manifest")
        if self.manifest is None and self._resume_overrides is not None:
            self.manifest = recorded  # a run resumed before its first checkpoint has its manifest only in the file
        if self.manifest is None:
            config = pl_module.hparams.get("config", {})
            channels_last = (config.get("module") or {}).get("channels_last")
            self.manifest = manifest(config.get("seed"), str(pl_module.device), channels_last)
        if self._restored or self._resume_overrides is not None:  # the same run, continued by this command
            self.manifest["resumes"] = _merged_resumes(self.manifest, recorded)
            self.manifest["resumes"].append(
                {
                    "time": now(),
                    "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
                    "overrides": self._resume_overrides or [],
                    # the first epoch this command trains (max_epochs when the run had already finished)
                    "from_epoch": int(self.history[-1]["epoch"]) + 1 if self.history else 0,
                }
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        entry: dict[str, float] = {"epoch": trainer.current_epoch}
        entry.update(_scalars(trainer.callback_metrics, "val/"))
        entry["time_s"] = round(self._elapsed_before + time.perf_counter() - self._started, 3)
        entry["steps"], entry["images_seen"] = trainer.global_step, self._images_seen
        self.history = [old for old in self.history if old["epoch"] != trainer.current_epoch] + [entry]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # every rank trains an equal share of the epoch's draws (samplers.EpochSeededSampler)
        self._images_seen += len(batch[0]) * trainer.world_size

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_done = True
        self.write(trainer, pl_module, "completed")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test = _scalars(trainer.callback_metrics, "test/")
        self.write(trainer, pl_module, "completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        error = f"{type(exception).__name__}: {exception}"
        note_recorded(exception)
        if _existing_record(self.path).get("status") == "completed":  # keep the results
            if trainer.global_rank == 0:  # a later command failed, or this run's own test after its fit completed
                mark_failed(self.path, pl_module.hparams.get("config", {}), error, own_run=self._fit_done)
            return
        self.write(trainer, pl_module, "failed", error)

    def state_dict(self) -> dict[str, Any]:
        elapsed = self._elapsed_before + time.perf_counter() - self._started
        return {"history": self.history, "elapsed_s": elapsed, "manifest": self.manifest, "images_seen": self._images_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fit_done:  # testing the best checkpoint must not rewind the history to the best epoch
            return
        self.history = list(state_dict["history"])
        self._elapsed_before = float(state_dict["elapsed_s"])
        self._images_seen = int(state_dict.get("images_seen", 0))  # 0 in checkpoints written before images were counted
        self.manifest = state_dict.get("manifest")
        self._restored = True


def _merged_resumes(restored: dict[str, Any], recorded: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The resumes of the checkpoint's manifest plus those only the file has (a resume that trained no epoch), by time."""
    resumes = list(restored.get("resumes", []))
    resumes += [entry for entry in (recorded or {}).get("resumes", []) if entry not in resumes]
    return sorted(resumes, key=lambda entry: entry["time"])


def _existing_record(path: Path) -> dict[str, Any]:
    """The record already at ``path`` (empty if none, or if it is unreadable: it is then rewritten whole)."""
    if not path.is_file():
        return {}
    try:
        return load_record(path)
    except RecordError:
        return {}


class RngState(pl.Callback):
    """Saves the Python, NumPy and torch RNG states in checkpoints and restores them on resume.

    Lightning checkpoints no RNG state; without it a resumed run draws different random numbers
    (dropout, random augmentations a user adds) than the uninterrupted run would have.
    """

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        state = {
            "python": random.getstate(),
            # as plain lists: checkpoints must load with weights_only=True
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


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
        grid = comparison_grid(images, masks, predictions, pl_module.classes.colors)
        trainer.logger.experiment.add_image("val/predictions", grid, global_step=trainer.global_step)


def named_choices(choices: Any) -> dict[str, str]:
    """Config-group choices (``loss: weighted_ce``) as plain strings; Hydra's own groups and empty optional ones left out."""
    return {
        str(group): str(choice) for group, choice in choices.items() if choice is not None and not str(group).startswith("hydra/")
    }


def recorded_choices(run_dir: str | None) -> dict[str, str]:
    """The config-group choices of the run's first command, from its ``.hydra/hydra.yaml`` (a resume keeps them)."""
    path = Path(run_dir or ".") / ".hydra" / "hydra.yaml"
    try:
        choices = yaml.safe_load(path.read_text())["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return named_choices(choices)


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
