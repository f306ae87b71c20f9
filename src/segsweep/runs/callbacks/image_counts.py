"""The image-counts callback: after testing, every test image's per-class intersection and union (runs/image_counts.py)."""

from __future__ import annotations

import pytorch_lightning as pl

from segsweep.runs.image_counts import write_image_counts
from segsweep.runs.per_case import write_per_case


class ImageCountsFile(pl.Callback):
    """After testing, writes the module's per-image test counts (``test_image_counts``) into ``dirpath``, and
    per_case.csv from them (with the module's ``test_surface`` HD95 and NSD when it computed them)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = getattr(pl_module, "test_image_counts", None)
        if trainer.global_rank != 0 or counts is None:
            return
        intersection, union = (values.cpu().numpy() for values in counts)
        names = list(pl_module.classes.names)
        write_image_counts(self.dirpath, intersection, union, names)
        surface = getattr(pl_module, "test_surface", None)
        hd95, nsd = (None, None) if surface is None else (values.cpu().numpy() for values in surface)
        write_per_case(self.dirpath, intersection, union, names, hd95=hd95, nsd=nsd)
