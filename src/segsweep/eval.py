"""Evaluation entry point: ``python -m segsweep.eval ckpt_path=<checkpoint or run dir>`` / ``segsweep-eval``.

Rebuilds the test split from the checkpoint's saved data config (plus any ``data.<key>=...``
override), runs a Lightning ``Trainer.test`` and writes into its own run directory:

- ``eval.json``: the test metrics under the training names (``test/mIoU``, ``test/iou/<class>``, ...),
  the per-class table, the confusion matrix and the data config used;
- ``per_class.csv``: class, IoU, precision, recall, pixel share, pixels;
- ``confusion_matrix.png``: normalised per true class, annotated.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from segsweep.build import load_module
from segsweep.checkpoint import CheckpointError, resolve_checkpoint
from segsweep.config import CONFIG_DIR
from segsweep.files import write_atomic, write_json_atomic, write_text_atomic
from segsweep.module import IGNORE_INDEX

log = logging.getLogger(__name__)


class UsageError(OSError):
    """An output location that cannot be used; the message names it."""


# Errors that are the user's input (a path, a value): reported as one line, exit code 1.
USER_ERRORS = (
    CheckpointError,
    UsageError,
    InstantiationException,
    FileNotFoundError,
    NotADirectoryError,
    FileExistsError,
    PermissionError,
    ValueError,
)


class ConfusionMatrixCallback(pl.Callback):
    """Accumulates a confusion matrix over the test split from the logits the test step computes anyway."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.matrix = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)
        self._logits: Tensor | None = None
        self._hook: Any = None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()
        self._hook = pl_module.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, inputs: Any, output: Tensor) -> None:
        self._logits = output.detach()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._logits is None:
            raise RuntimeError("confusion matrix: the test step did not call the module's forward")
        self.matrix.update(self._logits.argmax(dim=1), batch[1])
        self._logits = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def counts(self) -> Tensor:
        """int64 [true class, predicted class] pixel counts."""
        return self.matrix.compute().cpu().long()


def load_checkpoint_module(path: Path) -> tuple[pl.LightningModule, DictConfig]:
    """``load_module``, with any failure to read the file reported as one CheckpointError line naming it."""
    try:
        return load_module(path)
    except USER_ERRORS:
        raise
    except Exception as error:  # e.g. a KeyError from torch.load on a file that is not a checkpoint at all
        first = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot load this checkpoint ({type(error).__name__}: {first})") from error


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` and check a file can be written there; one line naming it otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check."):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"output_dir={path}: cannot write there ({reason})") from None
    return path


def require(cfg: DictConfig, *keys: str) -> None:
    """Mandatory keys (``???`` in the config) as one clear line instead of OmegaConf's traceback."""
    for key in keys:
        if OmegaConf.is_missing(cfg, key):
            raise ValueError(f"{key} is required: add {key}=<value> to the command (see conf/{cfg.task_name}.yaml)")


def data_config(saved: DictConfig, overrides: DictConfig | None) -> DictConfig:
    """The checkpoint's data config with every non-null key of ``overrides`` merged in."""
    changes = OmegaConf.to_container(overrides, resolve=True) if overrides is not None else {}

    def prune(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        kept = {key: prune(value) for key, value in node.items()}
        return {key: value for key, value in kept.items() if value is not None and value != {}}

    changes = prune(changes)
    for key, value in changes.items():
        log.info("data.%s=%s (checkpoint: %s)", key, value, saved.get(key))
    return OmegaConf.merge(saved, changes)


def per_class_table(counts: Tensor, iou: dict[str, float], class_names: list[str]) -> list[dict[str, Any]]:
    """IoU (as logged by the test step), precision, recall and pixel share of each class."""
    counts = counts.double()
    tp, truth, predicted = counts.diag(), counts.sum(dim=1), counts.sum(dim=0)
    total = float(counts.sum())

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    return [
        {
            "class": name,
            "iou": iou.get(name, ratio(float(tp[i]), float(truth[i] + predicted[i] - tp[i]))),
            "precision": ratio(float(tp[i]), float(predicted[i])),
            "recall": ratio(float(tp[i]), float(truth[i])),
            "pixel_share": ratio(float(truth[i]), total),
            "pixels": int(truth[i]),
        }
        for i, name in enumerate(class_names)
    ]


def normalized(counts: Tensor) -> Tensor:
    """Rows (true classes) summing to 1; NaN rows for classes without pixels."""
    rows = counts.double().sum(dim=1, keepdim=True)
    return torch.where(rows > 0, counts.double() / rows.clamp(min=1), torch.full_like(rows, math.nan).expand_as(counts.double()))


def confusion_matrix_png(counts: Tensor, class_names: list[str], title: str) -> bytes:
    """The row-normalised confusion matrix as an annotated heat map (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = normalized(counts).numpy()
    size = 1.2 + 1.1 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    try:
        shown = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
        ticks = range(len(class_names))
        axes.set_xticks(ticks, class_names, rotation=30, ha="right")
        axes.set_yticks(ticks, class_names)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(title, fontsize=10)
        for i in ticks:
            for j in ticks:
                value = share[i, j]
                text = "n/a" if math.isnan(value) else f"{100 * value:.1f}%\n{int(counts[i, j]):,}"
                color = "white" if not math.isnan(value) and value > 0.5 else "black"
                axes.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _training_test_miou(checkpoint: Path) -> float | None:
    """The test mIoU the training run recorded in its metrics.json (run/checkpoints/<ckpt> -> run/metrics.json)."""
    path = checkpoint.resolve().parent.parent / "metrics.json"
    try:
        value = json.loads(path.read_text()).get("test", {}).get("test/mIoU")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def print_results(metrics: dict[str, float], rows: list[dict[str, Any]], recorded: float | None, console: Console) -> None:
    table = Table(title="per class (test split)")
    for column in ("class", "IoU", "precision", "recall", "pixel share", "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in rows:
        table.add_row(
            row["class"],
            *(f"{row[key]:.4f}" for key in ("iou", "precision", "recall")),
            f"{100 * row['pixel_share']:.2f}%",
            f"{row['pixels']:,}",
        )
    console.print(table)
    for name, value in metrics.items():
        if "/iou/" not in name:
            console.print(f"{name:<18} {value:.6f}")
    if recorded is not None:
        console.print(f"test/mIoU recorded at training time: {recorded:.6f} (difference {metrics['test/mIoU'] - recorded:+.2e})")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint and write eval.json, per_class.csv and confusion_matrix.png into cfg.output_dir."""
    require(cfg, "ckpt_path")
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    output_dir = prepare_output_dir(Path(cfg.output_dir))
    module, saved = load_checkpoint_module(checkpoint)
    data_cfg = data_config(saved.data, cfg.get("data"))
    datamodule = instantiate(data_cfg)
    class_names = list(module.class_names)

    saved_trainer = saved.get("trainer", {})
    precision = cfg.trainer.precision if cfg.trainer.precision is not None else saved_trainer.get("precision", "32-true")
    limit = cfg.trainer.limit_test_batches
    if limit is None:
        limit = saved_trainer.get("limit_test_batches") or 1.0
    confusion = ConfusionMatrixCallback(len(class_names))
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=precision,
        limit_test_batches=limit,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        callbacks=[confusion, *([RichProgressBar()] if cfg.progress else [])],
        default_root_dir=str(output_dir),
    )
    log.info("testing %s on %d test scenes (%s px)", checkpoint, datamodule.split_sizes["test"], datamodule.image_size)
    (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {name: float(value) for name, value in sorted(results.items())}
    counts = confusion.counts()
    iou = {name: metrics[f"test/iou/{name}"] for name in class_names if f"test/iou/{name}" in metrics}
    rows = per_class_table(counts, iou, class_names)
    # training's own test mIoU is comparable only on the same test split
    recorded = _training_test_miou(checkpoint) if data_cfg == saved.data else None

    title = f"{checkpoint.parent.parent.name}/{checkpoint.name}: test split, {int(counts.sum()):,} pixels"
    write_atomic(output_dir / "confusion_matrix.png", lambda file: file.write(confusion_matrix_png(counts, class_names, title)))
    write_text_atomic(output_dir / "per_class.csv", _csv(rows))
    report = {
        "checkpoint": str(checkpoint),
        "metrics": metrics,
        "training_test_mIoU": recorded,
        "per_class": rows,
        "confusion_matrix": {
            "classes": class_names,
            "rows": "true class",
            "columns": "predicted class",
            "counts": counts.tolist(),
            "normalized": [[None if math.isnan(v) else v for v in row] for row in normalized(counts).tolist()],
        },
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "trainer": {"precision": str(precision), "limit_test_batches": limit, "accelerator": type(trainer.accelerator).__name__},
    }
    write_json_atomic(output_dir / "eval.json", _json_safe(report))
    print_results(metrics, rows, recorded, Console())
    log.info("wrote eval.json, per_class.csv and confusion_matrix.png to %s", output_dir)
    return report


def _json_safe(value: Any) -> Any:
    """NaN -> null, so eval.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def one_line(error: BaseException) -> str:
    """The first line of an error; our ValueErrors already name the key or file, others get their type."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # the cause names the bad key or file
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first if isinstance(error, (ValueError, UsageError)) else f"{type(error).__name__}: {first}"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Returns the test mIoU (for sweeps over checkpoints)."""
    try:
        report = evaluate(cfg)
    except USER_ERRORS as error:
        log.error("eval failed: %s", one_line(error))
        sys.exit(1)
    return report["metrics"].get("test/mIoU")


if __name__ == "__main__":
    main()
