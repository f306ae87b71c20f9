"""Training samplers: repeat factors as LVIS defines them, determinism by (seed, epoch), fixed epoch length, and the
training images each epoch counts in the run's history."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from segsweep.data.samplers import EpochSeededSampler, RepeatFactorSampler, repeat_factors, train_sampler
from segsweep.data.scenes import SCENE_CLASSES
from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.models.module import SegmentationModule
from segsweep.models.nets.unet import UNet
from segsweep.runs.callbacks.metrics_file import MetricsFile

from .helpers.outputs import read_metrics

# 32 train images in batches of 8, of which few have pedestrians: repeat-factor epochs are longer
TINY_SCENES = {
    "image_size": 32,
    "train_size": 32,
    "val_size": 8,
    "test_size": 8,
    "batch_size": 8,
    "scene": {"pedestrian_prob": 0.1},
}


def test_repeat_factors_of_a_made_up_dataset():
    # 10 images, 3 classes: class 0 in all, class 1 in 5, class 2 in 1 (fractions 1.0, 0.5, 0.1)
    presence = torch.zeros(10, 3, dtype=torch.bool)
    presence[:, 0] = True
    presence[:5, 1] = True
    presence[9, 2] = True
    factors = repeat_factors(presence, threshold=0.4)
    # r_c = max(1, sqrt(0.4 / f_c)): 1, 1, 2; an image repeats as often as its rarest class asks
    assert factors[:9].tolist() == pytest.approx([1.0] * 9)
    assert float(factors[9]) == pytest.approx(2.0)
    factors = repeat_factors(presence, threshold=0.8)
    assert factors[:5].tolist() == pytest.approx([math.sqrt(0.8 / 0.5)] * 5)
    assert factors[5:9].tolist() == pytest.approx([1.0] * 4)
    assert float(factors[9]) == pytest.approx(math.sqrt(8.0))


def test_repeat_factor_epochs_are_deterministic_expanded_and_of_fixed_length():
    factors = torch.tensor([1.0, 1.0, 1.5, 2.0, 3.7])
    sampler = RepeatFactorSampler(factors, seed=3)
    assert sampler.epoch_length == round(float(factors.sum()))
    assert len(sampler) == sampler.epoch_length
    epochs = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert len(items) == sampler.epoch_length
        assert {item[1] for item in items} == {epoch}
        epochs.append([index for index, _ in items])
    again = RepeatFactorSampler(factors, seed=3)
    again.set_epoch(4)
    assert [index for index, _ in again] == epochs[4]  # a resumed run replays the epoch
    assert epochs[0] != epochs[1]
    counts = torch.bincount(torch.tensor(sum(epochs, [])), minlength=5).double() / len(epochs)
    assert float(counts[4]) > float(counts[0]) * 2  # the rare image repeats


def test_ranks_share_a_repeat_factor_epoch():
    factors = torch.tensor([1.0, 2.5, 1.0, 1.2, 4.0, 1.0, 1.0])
    whole = RepeatFactorSampler(factors, seed=0)
    ranks = [RepeatFactorSampler(factors, seed=0, num_replicas=2, rank=rank) for rank in (0, 1)]
    first, second = ([index for index, _ in rank] for rank in ranks)
    assert len(first) == len(second)
    interleaved = [index for pair in zip(first, second) for index in pair]
    assert interleaved[: whole.epoch_length] == [index for index, _ in whole]


def test_uniform_is_the_plain_epoch_order_and_a_bad_name_is_one_line():
    sampler = train_sampler("uniform", 8, 5, lambda: torch.zeros(0), 0.5)
    assert type(sampler) is EpochSeededSampler
    assert sorted(index for index, _ in sampler) == list(range(8))
    with pytest.raises(ValueError, match="data.sampler must be one of uniform, repeat_factor, got 'oversample'"):
        train_sampler("oversample", 8, 5, lambda: torch.zeros(0), 0.5)
    with pytest.raises(ValueError, match="data.sampler"):
        SceneDataModule(sampler="oversample")
    with pytest.raises(ValueError, match="data.repeat_threshold"):
        SceneDataModule(repeat_threshold=0)


def test_the_scene_datamodule_oversamples_images_with_pedestrians():
    sizes = {"image_size": 32, "train_size": 64, "val_size": 8, "test_size": 8}
    datamodule = SceneDataModule(**sizes, scene={"pedestrian_prob": 0.1}, sampler="repeat_factor", repeat_threshold=0.9)
    datamodule.setup("fit")
    presence = datamodule.class_presence
    loader = datamodule.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, RepeatFactorSampler)
    with_pedestrian = presence[:, 3]
    assert 0 < int(with_pedestrian.sum()) < 64
    assert sampler.epoch_length > 64
    indices = torch.tensor([index for index, _ in sampler])
    share = float(with_pedestrian[indices].double().mean())
    assert share > float(with_pedestrian.double().mean())


def trained_history(sampler: str, run_dir: Path) -> list[dict]:
    """The metrics.json history of two epochs of a tiny U-Net trained with ``sampler``."""
    datamodule = SceneDataModule(**TINY_SCENES, sampler=sampler, repeat_threshold=0.9)
    module = SegmentationModule(
        UNet(num_classes=4, base_channels=4, depth=2), torch.nn.CrossEntropyLoss(), torch.optim.Adam, SCENE_CLASSES
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[MetricsFile(str(run_dir))],
    )
    trainer.fit(module, datamodule=datamodule)
    return read_metrics(run_dir)["history"]


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return {sampler: trained_history(sampler, tmp_path_factory.mktemp(sampler)) for sampler in ("uniform", "repeat_factor")}


def test_the_history_counts_optimizer_steps(histories):
    assert [entry["steps"] for entry in histories["uniform"]] == [4, 8]


def test_the_history_counts_the_training_images_seen(histories):
    assert [entry["images_seen"] for entry in histories["uniform"]] == [32, 64]


def test_repeat_factor_images_seen_grow_by_its_epoch_length(histories):
    sampler = SceneDataModule(**TINY_SCENES, sampler="repeat_factor", repeat_threshold=0.9).train_dataloader().sampler
    assert [entry["images_seen"] for entry in histories["repeat_factor"]] == [sampler.epoch_length, 2 * sampler.epoch_length]


def test_repeat_factor_epochs_see_more_images_than_uniform(histories):
    assert histories["repeat_factor"][0]["images_seen"] > histories["uniform"][0]["images_seen"]
