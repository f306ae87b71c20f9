import torch

from segsweep.data.contract import SegmentationData
from segsweep.data.folder import FolderDataModule
from segsweep.data.samplers import EpochSeededSampler
from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.export_scenes import export


def small(**kwargs):
    options = dict(image_size=32, train_size=24, val_size=8, test_size=8, batch_size=8, order_seed=5)
    return SceneDataModule(**(options | kwargs))


def test_order_is_a_function_of_seed_and_epoch():
    sampler = EpochSeededSampler(20, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append([index for index, _ in sampler])
    assert orders[0] == orders[2]
    assert orders[0] != orders[1]
    assert sorted(orders[0]) == list(range(20))
    other = EpochSeededSampler(20, seed=4)
    assert [index for index, _ in other] != orders[0]


def test_batches_and_flips_replay_exactly_for_an_epoch():
    first, second = small(), small()
    for datamodule in (first, second):
        datamodule.setup("fit")
    loader_a, loader_b = first.train_dataloader(), second.train_dataloader()
    loader_b.sampler.set_epoch(3)
    epoch3 = [batch for batch in loader_b]
    loader_a.sampler.set_epoch(3)
    again = [batch for batch in loader_a]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch3, again))
    images, masks = epoch3[0]
    assert images.shape == (8, 3, 32, 32)
    assert images.dtype == torch.float32
    assert images.min() >= 0
    assert images.max() <= 1
    assert masks.shape == (8, 32, 32)
    assert masks.dtype == torch.long


def test_flip_is_applied_to_image_and_mask_together():
    datamodule = small()
    datamodule.setup("fit")
    dataset = datamodule.splits["train"]
    flipped = 0
    for index in range(len(dataset)):
        image, mask = dataset[(index, 0)]
        original = dataset.images[index].float() / 255
        if not torch.equal(image, original):
            assert torch.equal(image, original.flip(-1))
            assert torch.equal(mask, dataset.masks[index].long().flip(-1))
            flipped += 1
    assert 0 < flipped < len(dataset)


def test_same_data_for_any_worker_count():
    batches = []
    for workers in (0, 2):
        datamodule = small(num_workers=workers)
        datamodule.setup("fit")
        batches.append([batch for batch in datamodule.train_dataloader()])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*batches))


def test_class_frequencies_of_the_train_split():
    datamodule = small()
    counts = datamodule.class_pixel_counts
    assert counts.sum() == 24 * 32 * 32
    assert torch.allclose(datamodule.class_frequencies.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert datamodule.class_names == ("background", "road", "car", "pedestrian")
    assert datamodule.num_classes == 4


def test_validation_and_test_are_not_shuffled_or_flipped():
    datamodule = small()
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.val_dataloader()))
    assert torch.equal(images, datamodule.splits["val"].images[:8].float() / 255)


def test_class_image_pixels_count_the_images_containing_each_class():
    datamodule = small()
    image_pixels = datamodule.class_image_pixels
    masks = datamodule.splits["train"].masks
    assert image_pixels[0] == 24 * 32 * 32  # every scene has sky
    with_pedestrians = sum(bool((mask == 3).any()) for mask in masks)
    assert image_pixels[3] == with_pedestrians * 32 * 32
    assert 0 < with_pedestrians < 24


def test_both_datamodules_satisfy_the_contract(tmp_path):
    folder = FolderDataModule(str(export(tmp_path / "folder", {"train": 4, "val": 2, "test": 2}, 32, seed=0)), crop_size=32)
    for datamodule in (small(), folder):
        assert isinstance(datamodule, SegmentationData), type(datamodule).__name__
        assert datamodule.classes.num_classes == datamodule.num_classes == len(datamodule.class_pixel_counts)
        assert datamodule.class_presence.shape == (datamodule.split_sizes["train"], datamodule.num_classes)
    assert (small().inference_roi, folder.inference_roi) == (None, 32)
    assert (small().classes_from_data, folder.classes_from_data) == (False, True)


def test_a_crop_larger_than_every_folder_image_shrinks_to_the_images(tmp_path, caplog):
    export(tmp_path / "small", {"train": 4, "val": 2, "test": 2}, (40, 56), seed=0)
    datamodule = FolderDataModule(str(tmp_path / "small"), crop_size=128, num_workers=0, cache_dir=str(tmp_path / "c"))
    with caplog.at_level("INFO", logger="segsweep.data.folder"):
        datamodule.setup("fit")
        datamodule.setup("test")
    # not padded to 128 px (10x the pixels, void): the largest square an image holds, and the windows of val and test
    assert datamodule.crop_size == datamodule.image_size == datamodule.inference_roi == 40
    image, mask = datamodule.splits["train"][0]
    assert image.shape[-2:] == mask.shape[-2:] == (40, 40)
    (line,) = [record.getMessage() for record in caplog.records if "larger than every train image" in record.getMessage()]
    assert line.startswith("data.crop_size=128 is larger than every train image")
