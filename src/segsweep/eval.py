"""Evaluation entry point: ``python -m segsweep.eval ckpt_path=<checkpoint or run dir>`` / ``segsweep-eval``.

Rebuilds the test split from the checkpoint's saved data config (plus any ``data.<key>=...``
override), runs a Lightning ``Trainer.test`` and writes into its own run directory:

- ``eval.json``: the test metrics under the training names (``test/mIoU``, ``test/iou/<class>``, ...),
  the per-class table, the confusion matrix and the data config used;
- ``per_class.csv``: class, IoU, precision, recall, pixel share, pixels;
- ``confusion_matrix.png``: normalised per true class, annotated.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table
from torch import Tensor

from segsweep.app.build import load_module
from segsweep.app.config import CONFIG_DIR
from segsweep.app.lifecycle import user_command
from segsweep.app.preflight import checked_command
from segsweep.app.resolvers import register_resolvers
from segsweep.app.typecheck import ENTRY_POINT_TYPES, check_types
from segsweep.models.metrics import iou_from_confusion
from segsweep.runs.checkpoint import resolve_checkpoint
from segsweep.runs.cli import configure_torch, json_safe, prepare_output_dir, require
from segsweep.runs.console import significant, table_console
from segsweep.runs.files import csv_text, write_json_atomic, write_text_atomic
from segsweep.runs.record import RecordError, load_record, record_path, test_metric
from segsweep.sweep.plots import confusion_matrix_png

log = logging.getLogger(__name__)
register_resolvers()


def data_config(saved: DictConfig, overrides: DictConfig | None) -> DictConfig:
    """The checkpoint's data config with every non-null key of ``overrides`` merged in; its ``cache_dir`` is not used."""
    changes = OmegaConf.to_container(overrides, resolve=True) if overrides is not None else {}

    def prune(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        kept = {key: prune(value) for key, value in node.items()}
        return {key: value for key, value in kept.items() if value is not None and value != {}}

    changes = prune(changes)
    for key, value in changes.items():
        log.info("data.%s=%s (checkpoint: %s)", key, value, saved.get(key))
    if "cache_dir" in saved:  # a checkpoint's path could point anywhere: the scan goes to this user's cache, or data.cache_dir
        saved = OmegaConf.merge(saved, {"cache_dir": None})
    return OmegaConf.merge(saved, changes)


def per_class_table(counts: Tensor, class_names: list[str]) -> list[dict[str, Any]]:
    """IoU, precision, recall and pixel share of each class, from the test split's confusion matrix."""
    iou = iou_from_confusion(counts).tolist()
    counts = counts.double()
    tp, truth, predicted = counts.diag(), counts.sum(dim=1), counts.sum(dim=0)
    total = float(counts.sum())

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    return [
        {
            "class": name,
            "iou": iou[i],
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


def _training_test_miou(checkpoint: Path) -> float | None:
    """The test mIoU the training run recorded in its metrics.json (run/checkpoints/<ckpt> -> run/metrics.json)."""
    try:
        value = test_metric(load_record(record_path(checkpoint.resolve().parent.parent)))
    except RecordError:
        return None
    return None if math.isnan(value) else value


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
            console.print(f"{name:<18} {significant(value)}")
    if recorded is not None:
        difference = metrics["test/mIoU"] - recorded
        console.print(f"test/mIoU recorded at training time: {significant(recorded)} (difference {difference:+.2e})")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint and write eval.json, per_class.csv and confusion_matrix.png into cfg.output_dir."""
    require(cfg, "ckpt_path")
    configure_torch(cfg.get("threads"))
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    output_dir = prepare_output_dir(Path(cfg.output_dir))
    module, saved = load_module(checkpoint)
    data_cfg = data_config(saved.data, cfg.get("data"))
    datamodule = instantiate(data_cfg)
    class_names = list(module.class_names)

    saved_trainer = saved.get("trainer", {})
    precision = cfg.trainer.precision if cfg.trainer.precision is not None else saved_trainer.get("precision", "32-true")
    limit = cfg.trainer.limit_test_batches
    if limit is None:
        limit = saved_trainer.get("limit_test_batches") or 1.0
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=precision,
        limit_test_batches=limit,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        callbacks=[RichProgressBar()] if cfg.progress else [],
        default_root_dir=str(output_dir),
    )
    log.info("testing %s on %d test scenes (%s px)", checkpoint, datamodule.split_sizes["test"], datamodule.image_size)
    (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {name: float(value) for name, value in sorted(results.items())}
    counts = module.confusion["test"]
    rows = per_class_table(counts, class_names)
    # training's own test mIoU is comparable only on the same test split
    recorded = _training_test_miou(checkpoint) if data_cfg == saved.data else None

    title = f"{checkpoint.parent.parent.name}/{checkpoint.name}: test split, {int(counts.sum()):,} pixels"
    confusion_matrix_png(counts.numpy(), normalized(counts).numpy(), class_names, title, output_dir / "confusion_matrix.png")
    write_text_atomic(output_dir / "per_class.csv", csv_text(rows))
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
    write_json_atomic(output_dir / "eval.json", json_safe(report))
    print_results(metrics, rows, recorded, table_console())
    log.info("wrote eval.json, per_class.csv and confusion_matrix.png to %s", output_dir)
    return report


@checked_command("eval", "eval")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@user_command("eval")
def main(cfg: DictConfig) -> float | None:
    """Returns the test mIoU (for sweeps over checkpoints)."""
    check_types(cfg, ENTRY_POINT_TYPES["eval"])
    return evaluate(cfg)["metrics"].get("test/mIoU")


if __name__ == "__main__":
    main()
