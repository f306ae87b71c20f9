"""Own data: a folder of images and masks, read lazily (DataLoader workers decode), as a LightningDataModule.

```
<root>/
  classes.yaml           names: [road, car, ...]        (required; index i = class i)
                         colors: [[128,64,128], ...]     (optional: drawing, and reading RGB colour masks)
                         ignore_index: 255               (optional: "void", never scored)
                         mapping: {7: 0, 26: 1, ...}     (optional: raw mask value -> class; others become ignore)
                         ignore_colors: [[0,0,0]]        (optional: RGB mask colours that are void)
  train/images/<name>.<png|jpg|...>   train/masks/<name>.png   (paired by file stem)
  val/images, val/masks               (optional: else a seeded ``val_fraction`` of train)
  test/images, test/masks             (optional: else the test stage uses val, and says so)
```

Training takes random ``crop_size`` crops (padded with the ignore index where an image is smaller; ``data.rare_crop_fraction``
of them centred on a rare class), with the augmentation of ``data.augment``; validation and test see whole images, which
the module segments by sliding windows of ``crop_size`` tiles (``inference_roi``), as ``segsweep.predict`` does. A
``crop_size`` larger than every train image shrinks to the largest square one of them holds (logged).

A public dataset's own layout (``layout``: data=cityscapes|ade20k|voc|camvid|nnunet) or an annotation tool's export
(data=coco|labelme|cvat_mask, masks drawn into the cache: data/annotations.py) replaces this one (data/layouts.py),
and ``folds``/``fold`` validate on a fold of the training cases (data/splits.py).

Every pair is checked once (readable, same size, mask values known) in a scan that also counts the class pixels of
every mask, cached outside the dataset (``cache_dir``, default ``~/.cache/segsweep/folder``) by the file list, sizes,
mtimes and classes.yaml. Bad data is one line naming the file, before training. Nothing is written into the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from segsweep import machine
from segsweep.data.annotations import AnnotationOptions
from segsweep.data.augment import Augment, AugmentSpec, RareCrops
from segsweep.data.classes import DatasetClasses
from segsweep.data.contract import DerivedStatistics
from segsweep.data.folder_classes import FolderDataError, MaskReader, load_classes
from segsweep.data.folder_files import FolderDataset, PadCollate, Pair, center_fit, list_pairs, scan
from segsweep.data.layouts import EXPORTS, resolve
from segsweep.data.loaders import data_loader
from segsweep.data.samplers import SAMPLERS, train_sampler
from segsweep.data.splits import assign, check_folds

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# What configs written for the generated scenes set (experiment=loss_comparison, debug=fast, conf/rarity); a folder
# has its own images, so data=folder accepts and ignores them.
SCENE_ONLY_KEYS = ("image_size", "train_size", "val_size", "test_size", "scene", "data_seed", "hflip", "generate_batch")


class FolderDataModule(DerivedStatistics, pl.LightningDataModule):
    """Train/val/test splits of a folder of images and masks (layout in the module docstring), a
    ``data.contract.SegmentationData`` as the scenes' datamodule is."""

    # model.num_classes follows classes.yaml (app/build.build_datamodule sets it)
    classes_from_data = True

    def __init__(
        self,
        root: str,
        crop_size: int = 128,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        order_seed: int = 0,
        augment: Mapping[str, Any] | AugmentSpec | None = None,
        rare_crop_fraction: float = 0.0,
        rare_classes: Sequence[str] | None = None,
        sampler: str = "uniform",
        repeat_threshold: float = 0.5,
        cache_dir: str | None = None,
        multiprocessing_context: str | None = None,
        layout: str | None = None,
        sbd: bool = False,
        folds: int | None = None,
        fold: int = 0,
        classes: Sequence[str] | None = None,
        unlisted: str = "background",
        line_width: int = 10,
        coco_annotations: str = "{split}/_annotations.coco.json",
        coco_images: str = "{split}",
        **scene_keys: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(scene_keys) - set(SCENE_ONLY_KEYS))
        if unknown:
            raise ValueError(f"data.{unknown[0]}: unknown key of data=folder (see conf/data/folder.yaml)")
        if scene_keys:  # e.g. experiment=loss_comparison or debug=fast, written for the scenes
            log.info(
                "data=folder ignores %s: they describe generated scenes (a folder trains on all its images, crops of "
                "data.crop_size)",
                ", ".join(f"data.{key}" for key in sorted(scene_keys)),
            )
        for key, value in {"crop_size": crop_size, "batch_size": batch_size, "eval_batch_size": eval_batch_size}.items():
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 (or null: one per available core), got {num_workers}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if repeat_threshold <= 0:
            raise ValueError(f"data.repeat_threshold must be > 0, got {repeat_threshold}")
        if root is None or not str(root).strip():
            raise ValueError("data.root is required: data=folder data.root=/path/to/dataset")
        check_folds(folds, fold)
        self.folds, self.fold = folds, fold
        self.root = Path(str(root)).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        if self.cache_dir is not None and _inside(self.cache_dir.resolve(), self.root):
            raise ValueError(f"data.cache_dir={cache_dir}: inside the dataset; nothing is written into data.root")
        if classes is not None and layout not in EXPORTS:
            raise ValueError("data.classes chooses the categories of an annotation export (data=coco|labelme|cvat_mask)")
        keys = (tuple(classes) if classes is not None else None, unlisted, line_width, coco_annotations, coco_images)
        options = AnnotationOptions(*keys, cache_dir=self.cache_dir)
        # a public dataset's layout (data/layouts.py) is listed at once: a wrong data.root is one line before any work;
        # an annotation export's masks are drawn then (once, into the cache)
        self.layout = resolve(layout, self.root, sbd, options) if layout is not None else None
        if self.layout is None and sbd:
            raise ValueError("data.sbd=true: SBD augments Pascal VOC only (data=voc)")
        self.spec = self.layout.spec if self.layout is not None else load_classes(self.root)
        self.classes: DatasetClasses = self.spec.classes
        self.reader = MaskReader(self.spec)
        # training crops, and the tiles of sliding-window inference (val, test, predict)
        self.crop_size = self.image_size = crop_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = machine.available_cores() if num_workers is None else num_workers
        self.val_fraction, self.split_seed, self.order_seed = val_fraction, split_seed, order_seed
        self.augment_spec = augment if isinstance(augment, AugmentSpec) else AugmentSpec.from_config(augment)
        self.rare_crops = RareCrops.from_config(rare_crop_fraction, rare_classes, self.classes.names)
        self.sampler, self.repeat_threshold = sampler, repeat_threshold
        self.multiprocessing_context = multiprocessing_context
        self.test_is_val = False
        self._pairs: dict[str, list[Pair]] | None = None
        self._stats: dict[str, list[Any]] | None = None
        self.splits: dict[str, FolderDataset] = {}

    @property
    def inference_roi(self) -> int:
        """Validation and test segment whole images by sliding windows of this size (as predict does)."""
        return self.image_size

    # -- layout

    @property
    def pairs(self) -> dict[str, list[Pair]]:
        """The pairs of each split (listing only: cheap); bad layout is one line naming the folder or file."""
        if self._pairs is None:
            self._pairs = self._list_splits()
        return self._pairs

    def _list_splits(self) -> dict[str, list[Pair]]:
        if self.layout is not None:
            listed = self.layout.splits
        else:
            train = list_pairs(self.root, "train")
            if train is None:
                raise FolderDataError(f"{self.root / 'train'}: missing; a folder dataset needs train/images and train/masks")
            found = {split: list_pairs(self.root, split) for split in ("val", "test")}
            listed = {"train": train, **{split: pairs for split, pairs in found.items() if pairs is not None}}
        pairs, self.test_is_val = assign(listed, self.root, self.val_fraction, self.split_seed, self.folds, self.fold)
        return pairs

    @property
    def split_sizes(self) -> dict[str, int]:
        return {split: len(pairs) for split, pairs in self.pairs.items()}

    # -- the one-time scan

    @property
    def stats(self) -> dict[str, list[Any]]:
        """Per pair: [height, width, image mode, class pixel counts]; from the cached scan of every split."""
        if self._stats is None:
            every = list({pair.name: pair for split in SPLITS for pair in self.pairs[split]}.values())
            self._stats = scan(every, self.spec, self.cache_dir, self.num_workers or 1, self.root)
        return self._stats

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pairs, stats = self.pairs, self.stats
        for note in self.layout.notes if self.layout is not None else ():
            log.info("%s", note)
        if self.test_is_val and self.layout is None:  # a layout's notes say which split tests
            log.info("%s: no test/ split: the test stage uses the val split (%d images)", self.root, len(pairs["val"]))
        if not int(self.class_pixel_counts.sum()):
            raise FolderDataError(
                f"{self.root / 'train' / 'masks'}: every pixel of every train mask is void "
                f"(ignore_index {self.classes.ignore_index}): nothing to train on"
            )
        sizes = [stats[pair.name][:2] for pair in pairs["train"]]
        fits = max(min(height, width) for height, width in sizes)
        if fits < self.crop_size:  # padding every crop would spend its FLOPs on void (4x at 64 px images, 128 px crops)
            log.info(
                "data.crop_size=%d is larger than every train image (the largest square one holds is %d px): "
                "training crops and sliding windows of %d px instead",
                self.crop_size,
                fits,
                fits,
            )
            self.crop_size = self.image_size = fits
        smaller = sum(1 for height, width in sizes if height < self.crop_size or width < self.crop_size)
        if smaller:
            log.info(
                "%d of %d train images are smaller than data.crop_size=%d: their crops are padded with the ignore index",
                smaller,
                len(sizes),
                self.crop_size,
            )
        augment = Augment(self.augment_spec, self.crop_size, self.classes.ignore_index, self.order_seed, self._rare_crops())
        self.splits = {
            "train": FolderDataset(pairs["train"], self.reader, augment),
            "val": FolderDataset(pairs["val"], self.reader),
            "test": FolderDataset(pairs["test"], self.reader),
        }

    def _rare_crops(self) -> RareCrops | None:
        """Class-aware crops (``data.rare_crop_fraction``), the rare classes of each train image from the cached scan."""
        if not self.rare_crops.fraction:
            return None
        crops = self.rare_crops.of_images(self.class_presence, self.class_pixel_counts)
        names = ", ".join(self.classes.names[label] for label in crops.classes or ()) or "no class (none is below the median)"
        log.info("class-aware crops: %g of them centred on %s, where the image has it", crops.fraction, names)
        return crops

    @property
    def class_pixel_counts(self) -> Tensor:
        """Pixels of each class in the train split (for class-weighted losses), from the cached scan."""
        counts = [self.stats[pair.name][3] for pair in self.pairs["train"]]
        return torch.tensor(counts, dtype=torch.long).sum(dim=0)

    @property
    def class_presence(self) -> Tensor:
        """bool [train images, classes]: whether each class occurs in each train image (repeat-factor sampling)."""
        return torch.tensor([self.stats[pair.name][3] for pair in self.pairs["train"]], dtype=torch.long) > 0

    @property
    def class_image_pixels(self) -> Tensor:
        """For each class, the pixels of the train images that contain it (median-frequency balancing)."""
        rows = [self.stats[pair.name] for pair in self.pairs["train"]]
        pixels = torch.tensor([row[0] * row[1] for row in rows], dtype=torch.long)
        return (self.class_presence.long() * pixels[:, None]).sum(dim=0)

    def sample_images(self, split: str, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` images (uint8 [N,3,S,S]) and masks (long [N,S,S]) of ``split``, unaugmented; each
        centre-cropped or padded (mask: ignore index) to ``crop_size`` for the grid."""
        items = self.whole_images(split, count)
        fitted = [center_fit(image, mask, self.image_size, self.classes.ignore_index) for image, mask in items]
        return torch.stack([image for image, _ in fitted]), torch.stack([mask for _, mask in fitted])

    def whole_images(self, split: str, count: int) -> list[tuple[Tensor, Tensor]]:
        """The first ``count`` images (uint8 [3,H,W]) and masks (long [H,W]) of ``split``, unaugmented, whole."""
        self.setup(split)
        dataset = self.splits[split]
        return [(image, mask.long()) for image, mask in map(dataset.load, range(min(count, len(dataset))))]

    # -- loaders

    def _loader(self, split: str, batch_size: int, sampler: Any = None) -> DataLoader:
        # crops make equal training images; val and test images keep their sizes, padded to the batch's largest
        collate = None if split == "train" else PadCollate(self.classes.ignore_index)
        dataset, workers, context = self.splits[split], self.num_workers, self.multiprocessing_context
        return data_loader(dataset, batch_size, sampler, workers, context, self.trainer, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        sampler = train_sampler(
            self.sampler,
            len(self.splits["train"]),
            self.order_seed,
            lambda: self.class_presence,
            self.repeat_threshold,
            self.trainer,
        )
        return self._loader("train", self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader("test", self.eval_batch_size)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
