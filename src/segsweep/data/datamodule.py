"""LightningDataModule over the generated train/val/test scene splits."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from segsweep.data.classes import DatasetClasses
from segsweep.data.scenes import SCENE_CLASSES, SceneSpec, generate_scenes, image_keys, uniform
from segsweep.runs.images import to_unit_float

_STREAM_ORDER, _STREAM_FLIP = 11, 12


def epoch_key(seed: int, epoch: int) -> int:
    """A 32-bit key for everything random in one epoch of training (order, flips)."""
    return int(image_keys(seed, "train", torch.tensor([epoch]))[0])


class EpochSeededSampler(DistributedSampler):
    """Yields ``(index, epoch)``; the order is a function of (seed, epoch) alone.

    Lightning calls ``set_epoch`` before each epoch, so a run resumed at epoch k replays the
    order an uninterrupted run would have used, and the dataset derives augmentation from the
    epoch it receives with each index (also inside worker processes). Under DDP each rank takes
    every ``num_replicas``-th index of the same order; being a DistributedSampler, Lightning
    uses it as it is instead of wrapping it.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        # DistributedSampler.__init__ is skipped on purpose: it needs a dataset and torch.distributed.
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = math.ceil(size / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_key(self.seed, self.epoch) ^ _STREAM_ORDER)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        order += order[: self.num_samples * self.num_replicas - self.size]  # equal shares for all ranks
        return ((index, self.epoch) for index in order[self.rank :: self.num_replicas])


class SceneDataset(Dataset):
    """Pre-generated scenes of one split; items are float images in [0, 1] and long masks."""

    def __init__(self, images: Tensor, masks: Tensor, hflip_seed: int | None = None) -> None:
        self.images, self.masks, self.hflip_seed = images, masks, hflip_seed
        self._flips: tuple[int, list[bool]] | None = None

    def flipped(self, index: int, epoch: int) -> bool:
        """Whether ``index`` is flipped in ``epoch``; decided for the whole epoch at once (one hash call, not one per item)."""
        if self._flips is None or self._flips[0] != epoch:
            keys = epoch_key(self.hflip_seed, epoch) ^ torch.arange(len(self))
            self._flips = (epoch, (uniform(keys, _STREAM_FLIP, 1)[:, 0] < 0.5).tolist())
        return self._flips[1][index]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image, mask = to_unit_float(self.images[index]), self.masks[index].long()
        if self.hflip_seed is not None and self.flipped(index, epoch):
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def worker_context(requested: str | None) -> str | None:
    """DataLoader worker start method: as configured, else ``fork`` inside loky processes
    (Hydra's joblib launcher), which cannot start workers with the default context."""
    if requested is None and type(multiprocessing.current_process()).__name__ == "LokyProcess":
        return "fork"
    return requested


class SceneDataModule(pl.LightningDataModule):
    """Train/val/test splits of synthetic street scenes, generated once in ``setup``."""

    def __init__(
        self,
        image_size: int = 64,
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        hflip: bool = True,
        data_seed: int = 0,
        order_seed: int = 0,
        scene: dict[str, Any] | SceneSpec | None = None,
        generate_batch: int = 512,
        multiprocessing_context: str | None = None,
    ) -> None:
        super().__init__()
        for key, value in (
            ("image_size", image_size),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
            ("batch_size", batch_size),
        ):
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.image_size = image_size
        self.split_sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.data_seed, self.order_seed = data_seed, order_seed
        self.spec = scene if isinstance(scene, SceneSpec) else _scene_spec(scene or {})
        self.generate_batch = generate_batch
        self.multiprocessing_context = multiprocessing_context
        self.splits: dict[str, SceneDataset] = {}

    classes: DatasetClasses = SCENE_CLASSES

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes.names

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def sample_images(self, split: str, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` images (uint8 [N,3,H,W]) and masks (long [N,H,W]) of ``split``, unaugmented."""
        self.setup(split)
        dataset = self.splits[split]
        return dataset.images[:count], dataset.masks[:count].long()

    def generate(self, split: str) -> tuple[Tensor, Tensor]:
        """All images and masks of ``split``, generated in chunks to bound peak memory."""
        size = self.split_sizes[split]
        chunks = [
            generate_scenes(
                self.spec, self.data_seed, split, torch.arange(start, min(start + self.generate_batch, size)), self.image_size
            )
            for start in range(0, size, self.generate_batch)
        ]
        return torch.cat([images for images, _ in chunks]), torch.cat([masks for _, masks in chunks])

    def setup(self, stage: str | None = None) -> None:
        for split in self.split_sizes:
            if split not in self.splits:
                hflip_seed = self.order_seed if split == "train" and self.hflip else None
                self.splits[split] = SceneDataset(*self.generate(split), hflip_seed=hflip_seed)

    @property
    def class_pixel_counts(self) -> Tensor:
        """Pixels of each class in the train split (for class-weighted losses)."""
        self.setup("fit")
        return torch.bincount(self.splits["train"].masks.flatten().long(), minlength=self.num_classes)

    @property
    def class_image_pixels(self) -> Tensor:
        """For each class, the pixels of the train images that contain it (median-frequency balancing)."""
        self.setup("fit")
        masks = self.splits["train"].masks.flatten(1)
        present = torch.stack([(masks == label).any(dim=1) for label in range(self.num_classes)], dim=1)
        return present.sum(dim=0) * masks.shape[1]

    @property
    def class_frequencies(self) -> Tensor:
        counts = self.class_pixel_counts.double()
        return counts / counts.sum()

    def _loader(self, split: str, sampler: Sampler | None = None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            multiprocessing_context=worker_context(self.multiprocessing_context) if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return self._loader(
            "train", EpochSeededSampler(self.split_sizes["train"], self.order_seed, num_replicas=replicas, rank=rank)
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _scene_spec(options: dict[str, Any]) -> SceneSpec:
    """SceneSpec from a config mapping; unknown keys are an error naming the key."""
    known = SceneSpec.__dataclass_fields__
    for key in options:
        if key not in known:
            raise ValueError(f"data.scene.{key}: unknown key (choose from {', '.join(known)})")
    return SceneSpec(
        **{
            key: tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
            for key, value in options.items()
        }
    )
