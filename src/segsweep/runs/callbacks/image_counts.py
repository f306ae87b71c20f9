"""The image-counts callback: after testing, every test image's per-class intersection and union (runs/image_counts.py)."""

from __future__ import annotations

import pytorch_lightning as pl

from segsweep.runs.image_counts import write_image_counts


class ImageCountsFile(pl.Callback):
    """After testing, writes the module's per-image test counts (``test_image_counts``) into ``dirpath``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = getattr(pl_module, "test_image_counts", None)
        if trainer.global_rank != 0 or counts is None:
            return
        intersection, union = counts
        write_image_counts(self.dirpath, intersection.cpu().numpy(), union.cpu().numpy(), list(pl_module.classes.names))
