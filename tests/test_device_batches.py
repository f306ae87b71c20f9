"""The device data path (data.on_device), forced on the CPU: the same batches in the same order as the DataLoader."""

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from segsweep.data.device_batches import DeviceBatches
from segsweep.data.scenes_datamodule import SceneDataModule


def scenes(**kwargs) -> SceneDataModule:
    options = dict(image_size=32, train_size=21, val_size=11, test_size=6, batch_size=4, order_seed=5)
    datamodule = SceneDataModule(**(options | kwargs))
    datamodule.setup("fit")
    return datamodule


def fake_trainer(world_size: int = 1, rank: int = 0, epoch: int = 0) -> SimpleNamespace:
    """What the datamodule reads of a trainer: its device, ranks and the epoch its fit starts at."""
    progress = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch)))
    return SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=world_size, global_rank=rank, fit_loop=progress
    )


def assert_same_batches(a, b) -> None:
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for (images_a, masks_a), (images_b, masks_b) in zip(a, b):
        assert images_a.dtype == images_b.dtype and masks_a.dtype == masks_b.dtype
        assert torch.equal(images_a, images_b) and torch.equal(masks_a, masks_b)


@pytest.mark.parametrize("sampler", ["uniform", "repeat_factor"])
def test_forced_device_batches_equal_the_dataloader_batches_epoch_by_epoch(sampler):
    options = dict(sampler=sampler, repeat_threshold=0.9)
    loader = scenes(on_device=False, **options).train_dataloader()
    device = scenes(on_device=True, **options).train_dataloader()
    assert isinstance(loader, DataLoader) and isinstance(device, DeviceBatches)
    assert len(device) == len(loader)
    for epoch in (0, 1, 4):  # Lightning sets the epoch on the ``sampler`` of both
        loader.sampler.set_epoch(epoch)
        device.sampler.set_epoch(epoch)
        assert_same_batches(device, loader)


def test_forced_device_batches_flip_some_images_and_follow_the_epoch_order():
    datamodule = scenes(on_device=True)
    device = datamodule.train_dataloader()
    indices, flips = device.epoch_order()
    assert sorted(indices.tolist()) == list(range(21)) and 0 < int(flips.sum()) < 21
    first = next(iter(device))[0][0]
    image = datamodule.splits["train"].images[indices[0]].float() / 255
    assert torch.equal(first, image.flip(-1) if flips[0] else image)


def test_val_and_test_batches_equal_the_dataloader_and_keep_their_order():
    for split in ("val", "test"):
        loader = getattr(scenes(on_device=False), f"{split}_dataloader")()
        device = getattr(scenes(on_device=True), f"{split}_dataloader")()
        assert_same_batches(device, loader)


def test_under_ddp_each_rank_gets_every_other_image_as_lightning_deals_a_val_dataloader():
    full = list(scenes(on_device=True).val_dataloader())
    images = torch.cat([batch[0] for batch in full])
    for rank in (0, 1):
        datamodule = scenes(on_device=True)
        datamodule.trainer = fake_trainer(world_size=2, rank=rank)
        shard = torch.cat([batch[0] for batch in datamodule.val_dataloader()])
        expected = [index % 11 for index in range(rank, 12, 2)]  # 11 images padded to 12 from the start
        assert torch.equal(shard, images[expected])


def test_a_resumed_fit_starts_on_its_epochs_order():
    datamodule = scenes(on_device=True)
    datamodule.trainer = fake_trainer(epoch=2)
    resumed = datamodule.train_dataloader()
    reference = scenes(on_device=True).train_dataloader()
    reference.sampler.set_epoch(2)
    assert_same_batches(resumed, reference)


def test_auto_is_the_dataloader_on_the_cpu_and_bad_values_name_the_key():
    assert isinstance(scenes().train_dataloader(), DataLoader)
    datamodule = scenes()
    datamodule.trainer = fake_trainer()
    assert datamodule.batch_device is None
    with pytest.raises(ValueError, match="data.on_device must be auto, true or false"):
        SceneDataModule(on_device="yes")


def test_the_scenes_are_generated_once_per_device_and_equal_the_cpu_splits():
    datamodule = scenes(on_device=True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # as trainer.deterministic=true leaves it when the loaders are made
    try:
        split = datamodule.device_split("train", torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled(), "the trainer's setting is restored"
    finally:
        torch.use_deterministic_algorithms(before)
    assert datamodule.device_split("train", torch.device("cpu")) is split
    assert torch.equal(split.images, datamodule.splits["train"].images)
    assert torch.equal(split.masks, datamodule.splits["train"].masks)


def fitted_weights(make_config, tmp_path, on_device: bool) -> dict:
    from segsweep.app.build import build_module

    cfg = make_config("data.train_size=24", "data.val_size=8", "data.test_size=8", "data.batch_size=8", "seed=3")
    cfg.data.on_device = on_device
    pl.seed_everything(3, workers=True)
    datamodule = scenes(batch_size=8, train_size=24, val_size=8, test_size=8, order_seed=3, on_device=on_device)
    module = build_module(cfg, datamodule)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return {key: value.clone() for key, value in module.state_dict().items()} | {
        "val_miou": trainer.callback_metrics["val/mIoU"].clone()
    }


def test_training_on_forced_device_batches_gives_bit_identical_weights(make_config, tmp_path):
    loader = fitted_weights(make_config, tmp_path / "loader", on_device=False)
    device = fitted_weights(make_config, tmp_path / "device", on_device=True)
    assert loader.keys() == device.keys()
    assert [key for key in loader if not torch.equal(loader[key], device[key])] == []
