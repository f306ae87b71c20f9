"""Batches of in-memory scenes indexed where they lie (a GPU): no DataLoader, no workers, no copies per batch.

What a DataLoader over a ``SceneDataset`` yields, bit for bit and in the same order: the sampler's ``(index, epoch)``
order, the epoch's flips, images as float in [0, 1] and masks as long. Per epoch the order and the flips (decided on
the host from (seed, epoch), as the dataset decides them) go to the device in one asynchronous copy from pinned
memory; each batch is then gathered, flipped and converted by kernels on the device, so a training step never waits
for the host.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from segsweep.inference import to_unit_float


class InMemoryScenes(Protocol):
    """What DeviceBatches reads of a split (``scenes_datamodule.SceneDataset``)."""

    images: Tensor
    masks: Tensor

    def __len__(self) -> int: ...

    def flip_mask(self, epoch: int) -> Tensor | None: ...


class DeviceBatches:
    """Batches of ``dataset`` (its tensors on any device) in the order of ``sampler``, which yields ``index`` or
    ``(index, epoch)`` (``samplers.EpochSeededSampler``); None: every image once, in order (val/test).

    Lightning calls ``sampler.set_epoch`` before each epoch (it looks for the ``sampler`` attribute, as on a DataLoader).
    """

    def __init__(self, dataset: InMemoryScenes, batch_size: int, sampler: Iterable[Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.batch_sampler = None  # read by Lightning as on a DataLoader: batches are cut from ``sampler``'s order

    def __len__(self) -> int:
        items = len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]
        return math.ceil(items / self.batch_size)

    def epoch_order(self) -> tuple[Tensor, Tensor | None]:
        """This epoch's image indices (long) and whether each is flipped (bool, None: no flips), on the host."""
        items = list(self.sampler) if self.sampler is not None else list(range(len(self.dataset)))
        pairs = [item if isinstance(item, tuple) else (item, 0) for item in items]
        indices = torch.tensor([index for index, _ in pairs], dtype=torch.long)
        epochs = {epoch for _, epoch in pairs}
        if len(epochs) > 1:
            raise ValueError(f"one epoch's sampler yielded images of epochs {sorted(epochs)}")
        flips = self.dataset.flip_mask(epochs.pop() if epochs else 0)
        return indices, None if flips is None else flips[indices]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.dataset.images.device
        indices, flips = self.epoch_order()
        host = indices if flips is None else torch.stack([indices, flips.long()])
        if device.type == "cuda":  # pinned, so the copy is asynchronous; ``host`` lives until the epoch is over
            host = host.pin_memory()
        order = host.to(device, non_blocking=True)
        indices, flips = (order, None) if flips is None else (order[0], order[1].bool())
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            images = to_unit_float(self.dataset.images.index_select(0, batch))
            masks = self.dataset.masks.index_select(0, batch).long()
            if flips is not None:
                flip = flips[start : start + self.batch_size]
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
                masks = torch.where(flip.view(-1, 1, 1), masks.flip(-1), masks)
            yield images, masks
