"""Class-aware crops of a folder dataset (data.rare_crop_fraction): centred on a rare class, seeded, off by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segsweep.data.augment import Augment, AugmentSpec, RareCrops, rare_by_share
from segsweep.data.folder import FolderDataModule

from .helpers.folders import NAMES, classes_yaml, write_pair

VEHICLE = NAMES.index("vehicle")
# 16 px crops of 64 px images: a random crop rarely holds the 3x3 vehicle blob
CROP, SIZE, EPOCHS = 16, 64, 8
# blob corners (row, column); the last image has none; (61, 61) is in a corner: its crops are clamped to the image
BLOBS = [(5, 40), (30, 8), (61, 61), (0, 0), (45, 22), None]


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    """Sky above road, and in every train image but the last a 3x3 vehicle blob (the rare class)."""
    root = tmp_path / "blobs"
    classes_yaml(root, names=NAMES)
    for index, corner in enumerate([*BLOBS, (20, 20), (10, 50)]):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[SIZE // 2 :] = 1
        if corner is not None:
            mask[corner[0] : corner[0] + 3, corner[1] : corner[1] + 3] = VEHICLE
        split, name = ("train", f"a{index}") if index < len(BLOBS) else ("val", f"v{index}")
        write_pair(root, split, name, mask, index)
    return root


def folder(root: Path, **options) -> FolderDataModule:
    datamodule = FolderDataModule(str(root), crop_size=CROP, num_workers=0, cache_dir=str(root.parent / "cache"), **options)
    datamodule.setup("fit")
    return datamodule


def crops(datamodule: FolderDataModule, indices: range = range(len(BLOBS))) -> list[tuple[torch.Tensor, torch.Tensor]]:
    train = datamodule.splits["train"]
    return [train[(index, epoch)] for epoch in range(EPOCHS) for index in indices]


def same(first: list, second: list) -> bool:
    return all(torch.equal(a, b) for pair_a, pair_b in zip(first, second) for a, b in zip(pair_a, pair_b))


def test_every_crop_holds_the_rare_class_at_fraction_one(blobs):
    # rare_classes unset: the vehicle is the one class below the median pixel share
    items = crops(folder(blobs, rare_crop_fraction=1.0), range(len(BLOBS) - 1))
    assert all(bool((mask == VEHICLE).any()) for _, mask in items)


def test_random_crops_mostly_miss_the_rare_class(blobs):
    """The blobs are small enough that class-aware crops are what puts them in the crops above."""
    items = crops(folder(blobs), range(len(BLOBS) - 1))
    assert sum(bool((mask == VEHICLE).any()) for _, mask in items) < len(items) / 2


def test_a_fraction_of_the_crops_is_class_aware(blobs):
    items = crops(folder(blobs, rare_crop_fraction=1 / 3), range(len(BLOBS) - 1))
    share = sum(bool((mask == VEHICLE).any()) for _, mask in items) / len(items)
    assert 0.2 < share < 0.7


def test_an_image_without_a_rare_class_crops_at_random(blobs):
    last = range(len(BLOBS) - 1, len(BLOBS))
    assert same(crops(folder(blobs, rare_crop_fraction=1.0), last), crops(folder(blobs), last))


def test_fraction_zero_crops_exactly_as_without_the_key(blobs):
    assert same(crops(folder(blobs, rare_crop_fraction=0.0, rare_classes=["vehicle"])), crops(folder(blobs)))


def test_a_class_aware_augment_at_fraction_zero_draws_the_plain_crops(blobs):
    """The class-aware draws use a stream of their own: crops, flips and jitter are unchanged."""
    spec = AugmentSpec.from_config({"vflip": True, "brightness": 0.3})
    image, mask = folder(blobs).splits["train"].load(0)
    plain = Augment(spec, CROP, 255, seed=3)
    aware = Augment(spec, CROP, 255, seed=3, rare=RareCrops(0.0, (VEHICLE,), ((VEHICLE,),)))
    items = [(plain(image, mask, 0, epoch), aware(image, mask, 0, epoch)) for epoch in range(EPOCHS)]
    assert all(same([first], [second]) for first, second in items)


def test_class_aware_crops_are_a_function_of_seed_epoch_and_index(blobs):
    first = crops(folder(blobs, rare_crop_fraction=0.5, order_seed=4))
    assert same(first, crops(folder(blobs, rare_crop_fraction=0.5, order_seed=4)))


def test_class_aware_crops_differ_between_epochs(blobs):
    train = folder(blobs, rare_crop_fraction=1.0).splits["train"]
    assert not same([train[(0, 0)]], [train[(0, 1)]])


def test_named_rare_classes_replace_the_pixel_shares(blobs):
    datamodule = folder(blobs, rare_crop_fraction=1.0, rare_classes=["sky", "vehicle"])
    assert datamodule.splits["train"].augment.rare.classes == (NAMES.index("sky"), VEHICLE)


def test_rare_by_share_is_below_the_median_share():
    assert rare_by_share(torch.tensor([900, 100])) == (1,)
    assert rare_by_share(torch.tensor([500, 300, 0, 150, 50])) == (3, 4)  # a class training lacks is never rare


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_fraction_outside_zero_to_one_is_one_line_naming_the_key(blobs, fraction):
    with pytest.raises(ValueError, match=rf"^data.rare_crop_fraction must be in \[0, 1\], got {fraction}$"):
        FolderDataModule(str(blobs), rare_crop_fraction=fraction)


def test_an_unknown_rare_class_is_one_line_naming_the_key(blobs):
    with pytest.raises(ValueError, match=r"^data.rare_classes: unknown class 'bus' \(the classes are sky, road, vehicle\)$"):
        FolderDataModule(str(blobs), rare_crop_fraction=0.3, rare_classes=["vehicle", "bus"])
