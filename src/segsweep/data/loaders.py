"""DataLoaders as every datamodule builds them: persistent workers, a start method that works where it runs, pinned batches."""

from __future__ import annotations

import multiprocessing
from typing import Any

from torch.utils.data import DataLoader


def worker_context(requested: str | None) -> str | None:
    """DataLoader worker start method: as configured, else ``fork`` inside loky processes
    (Hydra's joblib launcher), which cannot start workers with the default context."""
    if requested is None and type(multiprocessing.current_process()).__name__ == "LokyProcess":
        return "fork"
    return requested


def pin_memory(trainer: Any) -> bool:
    """Page-locked batches when the trainer runs on a CUDA device: their copies to it are faster and asynchronous."""
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


def data_loader(
    dataset: Any, batch_size: int, sampler: Any, workers: int, context: str | None, trainer: Any, **extra: Any
) -> DataLoader:
    """A DataLoader as the datamodules build one: persistent workers, started with a context that works where the
    job runs (``worker_context``), and batches pinned for a CUDA trainer."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory(trainer),
        multiprocessing_context=worker_context(context) if workers > 0 else None,
        **extra,
    )
