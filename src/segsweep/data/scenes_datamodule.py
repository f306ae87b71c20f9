"""The scenes' datamodule: a LightningDataModule over the generated train/val/test scene splits."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from segsweep.data.classes import DatasetClasses
from segsweep.data.contract import DerivedStatistics
from segsweep.data.device_batches import DeviceBatches
from segsweep.data.loaders import data_loader
from segsweep.data.samplers import SAMPLERS, STREAM_FLIP, epoch_key, train_sampler
from segsweep.data.scenes import SCENE_CLASSES, SceneSpec, generate_scenes, uniform
from segsweep.inference import to_unit_float

log = logging.getLogger(__name__)


class SceneDataset(Dataset):
    """Pre-generated scenes of one split; items are float images in [0, 1] and long masks."""

    def __init__(self, images: Tensor, masks: Tensor, hflip_seed: int | None = None) -> None:
        self.images, self.masks, self.hflip_seed = images, masks, hflip_seed
        self._flips: tuple[int, list[bool]] | None = None

    def flip_mask(self, epoch: int) -> Tensor | None:
        """bool [images] on the CPU: which images ``epoch`` flips (from (seed, epoch), for every image at once); None
        without flips."""
        if self.hflip_seed is None:
            return None
        keys = epoch_key(self.hflip_seed, epoch) ^ torch.arange(len(self))
        return uniform(keys, STREAM_FLIP, 1)[:, 0] < 0.5

    def flipped(self, index: int, epoch: int) -> bool:
        """Whether ``index`` is flipped in ``epoch``; decided for the whole epoch at once (one hash call, not one per item)."""
        if self._flips is None or self._flips[0] != epoch:
            self._flips = (epoch, self.flip_mask(epoch).tolist())
        return self._flips[1][index]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        image, mask = to_unit_float(self.images[index]), self.masks[index].long()
        if self.hflip_seed is not None and self.flipped(index, epoch):
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


class SceneDataModule(DerivedStatistics, pl.LightningDataModule):
    """Train/val/test splits of synthetic street scenes, generated once in ``setup`` (a ``data.contract.SegmentationData``)."""

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
        sampler: str = "uniform",
        repeat_threshold: float = 0.5,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__()
        if on_device not in ("auto", True, False):
            raise ValueError(f"data.on_device must be auto, true or false, got {on_device!r}")
        self.on_device = on_device
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if repeat_threshold <= 0:
            raise ValueError(f"data.repeat_threshold must be > 0, got {repeat_threshold}")
        self.sampler, self.repeat_threshold = sampler, repeat_threshold
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
        self.spec = scene if isinstance(scene, SceneSpec) else scene_spec(scene or {})
        self.generate_batch = generate_batch
        self.multiprocessing_context = multiprocessing_context
        self.splits: dict[str, SceneDataset] = {}
        self.device_splits: dict[tuple[str, torch.device], SceneDataset] = {}

    classes: DatasetClasses = SCENE_CLASSES
    classes_from_data = False  # the scenes' classes are fixed; model.num_classes must match them

    @property
    def inference_roi(self) -> None:
        """Validation and test scenes have the training size: no sliding windows."""
        return None

    def sample_images(self, split: str, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` images (uint8 [N,3,H,W]) and masks (long [N,H,W]) of ``split``, unaugmented."""
        self.setup(split)
        dataset = self.splits[split]
        return dataset.images[:count], dataset.masks[:count].long()

    def whole_images(self, split: str, count: int) -> list[tuple[Tensor, Tensor]]:
        """The first ``count`` scenes of ``split`` as (uint8 [3,H,W] image, long [H,W] mask) pairs."""
        return list(zip(*self.sample_images(split, count)))

    def generate(self, split: str, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """All images and masks of ``split`` on ``device`` (the same there as on the CPU: scenes.py), generated in
        chunks to bound peak memory."""
        size, batch = self.split_sizes[split], self.generate_batch
        chunks = [
            generate_scenes(
                self.spec, self.data_seed, split, torch.arange(start, min(start + batch, size)), self.image_size, device=device
            )
            for start in range(0, size, batch)
        ]
        return torch.cat([images for images, _ in chunks]), torch.cat([masks for _, masks in chunks])

    def setup(self, stage: str | None = None) -> None:
        for split in self.split_sizes:
            if split not in self.splits:
                self.splits[split] = SceneDataset(*self.generate(split), hflip_seed=self._hflip_seed(split))

    def _hflip_seed(self, split: str) -> int | None:
        return self.order_seed if split == "train" and self.hflip else None

    @property
    def batch_device(self) -> torch.device | None:
        """Where batches are indexed (``data.on_device``): the trainer's CUDA device with ``auto``, its device (the
        CPU without a trainer) with ``true``; None: a DataLoader over the CPU splits."""
        root = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.on_device == "auto":
            return root if root.type == "cuda" else None
        return root if self.on_device else None

    def device_split(self, split: str, device: torch.device) -> SceneDataset:
        """``split`` generated on ``device``, once."""
        if (split, device) not in self.device_splits:
            with integer_ops_unchecked():
                generated = self.generate(split, device)
            self.device_splits[split, device] = SceneDataset(*generated, self._hflip_seed(split))
        return self.device_splits[split, device]

    @property
    def class_pixel_counts(self) -> Tensor:
        """Pixels of each class in the train split (for class-weighted losses)."""
        self.setup("fit")
        return torch.bincount(self.splits["train"].masks.flatten().long(), minlength=self.num_classes)

    @property
    def class_presence(self) -> Tensor:
        """bool [train images, classes]: whether each class occurs in each train image (repeat-factor sampling)."""
        self.setup("fit")
        masks = self.splits["train"].masks.flatten(1)
        return torch.stack([(masks == label).any(dim=1) for label in range(self.num_classes)], dim=1)

    @property
    def class_image_pixels(self) -> Tensor:
        """For each class, the pixels of the train images that contain it (median-frequency balancing)."""
        return self.class_presence.sum(dim=0) * self.splits["train"].masks[0].numel()

    def _loader(self, split: str, sampler: Sampler | None = None) -> DataLoader | DeviceBatches:
        device = self.batch_device
        if device is not None:  # no workers, no pinning: the scenes lie on the device already
            trainer = self.trainer
            if sampler is None and trainer is not None and trainer.world_size > 1:
                # what Lightning gives a val/test DataLoader under DDP: each rank every world_size-th image
                sampler = DistributedSampler(range(self.split_sizes[split]), trainer.world_size, trainer.global_rank, False)
            return DeviceBatches(self.device_split(split, device), self.batch_size, sampler)
        return data_loader(
            self.splits[split], self.batch_size, sampler, self.num_workers, self.multiprocessing_context, self.trainer
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        sampler = train_sampler(
            self.sampler,
            self.split_sizes["train"],
            self.order_seed,
            lambda: self.class_presence,
            self.repeat_threshold,
            self.trainer,
        )
        log.info("train sampler %s: %d images per epoch (%d distinct)", self.sampler, sampler.epoch_length, sampler.size)
        return self._loader("train", sampler)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("test")


@contextmanager
def integer_ops_unchecked() -> Iterator[None]:
    """torch's deterministic mode off while scenes are drawn on a device: their scatter-adds and cumulative sums add
    integers, exact in any order, but under ``trainer.deterministic=true`` torch would refuse some on a GPU."""
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def scene_spec(options: dict[str, Any]) -> SceneSpec:
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
