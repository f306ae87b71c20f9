"""Training samplers: repeat factors as LVIS defines them, determinism by (seed, epoch), fixed epoch length."""

from __future__ import annotations

import math

import pytest
import torch

from segsweep.data.datamodule import SceneDataModule
from segsweep.data.samplers import EpochSeededSampler, RepeatFactorSampler, repeat_factors, train_sampler


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
