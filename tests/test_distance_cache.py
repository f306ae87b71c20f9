"""The truth's distance maps (boundary loss, HD-DT) computed once per mask and kept: same values, fewer transforms."""

from __future__ import annotations

import pytest
import torch

from segsweep.data.scenes_datamodule import SceneDataModule
from segsweep.models.losses import BoundaryLoss, HausdorffDTLoss, SurfaceLoss
from segsweep.models.losses.boundary import signed_distance_map, signed_distance_maps
from segsweep.models.losses.distance_cache import MIB, MaskMapCache
from segsweep.models.losses.hausdorff import boundary_distances

from .test_losses import make_batch

GDL = {"_target_": "segsweep.models.losses.dice.GeneralizedDiceLoss"}


def test_cached_maps_are_the_maps_and_a_mask_seen_again_is_not_transformed_again():
    _, target = make_batch(b=4, h=12, w=10, ignore_fraction=0.1)
    cache = MaskMapCache(signed_distance_map)
    first = cache(target, num_classes=4)
    torch.testing.assert_close(first, signed_distance_maps(target, 4), rtol=0, atol=0)
    assert (cache.misses, cache.hits) == (4, 0)
    again = cache(target[[2, 0]], num_classes=4)  # another batch of masks seen before
    torch.testing.assert_close(again, first[[2, 0]], rtol=0, atol=0)
    assert (cache.misses, cache.hits) == (4, 2)
    flipped = cache(target[:1].flip(-1), num_classes=4)  # a flipped mask is another mask: its own map
    torch.testing.assert_close(flipped, first[:1].flip(-1), rtol=0, atol=0)
    assert cache.misses == 5
    cache(target[:1], num_classes=5)  # another setting of the map function: another map
    assert cache.misses == 6 and cache.bytes == 5 * (4 * 120 * 4) + 5 * 120 * 4


def test_a_full_cache_keeps_its_first_maps_and_computes_the_rest_exactly():
    _, target = make_batch(b=6, h=8, w=8)
    one_map = 4 * 8 * 8 * 4
    cache = MaskMapCache(signed_distance_map, capacity_mb=2.5 * one_map / MIB)
    for _ in range(3):
        torch.testing.assert_close(cache(target, num_classes=4), signed_distance_maps(target, 4), rtol=0, atol=0)
    assert len(cache.maps) == 2 and cache.bytes == 2 * one_map
    assert (cache.hits, cache.misses) == (2 * 2, 6 + 2 * 4)
    none_kept = MaskMapCache(signed_distance_map, capacity_mb=0)
    none_kept(target, num_classes=4)
    assert none_kept.maps == {} and none_kept.misses == 6


@pytest.mark.parametrize("make", [lambda mb: BoundaryLoss(GDL, cache_mb=mb), lambda mb: HausdorffDTLoss(cache_mb=mb)])
def test_the_losses_equal_their_uncached_selves_over_epochs(make):
    cached, uncached = make(512.0), make(0.0)
    for epoch in range(3):
        for seed in range(2):  # two batches an epoch: the same masks, new logits
            logits, target = make_batch(b=3, h=14, w=12, ignore_fraction=0.1, seed=seed)
            logits = logits + epoch
            torch.testing.assert_close(cached(logits, target), uncached(logits, target), rtol=0, atol=0)
    cache = cached.surface.distance_maps if isinstance(cached, BoundaryLoss) else cached.truth_distances
    assert (cache.misses, cache.hits) == (6, 12)


def test_the_hd_dt_truth_maps_are_the_batched_truth_distances():
    logits, target = make_batch(b=2, h=10, w=9, ignore_fraction=0.2)
    loss = HausdorffDTLoss()
    loss(logits, target)
    truth = torch.nn.functional.one_hot(target.clamp_max(3), 4).movedim(-1, 1).bool() & (target != 255).unsqueeze(1)
    cached = loss.truth_distances(target, classes=range(1, 4))
    torch.testing.assert_close(cached, boundary_distances(truth[:, 1:]), rtol=0, atol=0)


def test_scene_training_epochs_transform_each_mask_once():
    """Over three epochs of flipped scenes, the boundary term computes one map per distinct mask (scene and flip)."""
    datamodule = SceneDataModule(image_size=24, train_size=8, val_size=1, test_size=1)
    datamodule.setup("fit")
    dataset, surface = datamodule.splits["train"], SurfaceLoss()
    distinct = set()
    for epoch in range(3):
        for start in (0, 4):
            masks = torch.stack([dataset[(index, epoch)][1] for index in range(start, start + 4)])
            distinct.update(mask.numpy().tobytes() for mask in masks)
            surface(torch.zeros(4, datamodule.num_classes, 24, 24), masks)
    cache = surface.distance_maps
    assert cache.misses == len(distinct) < 3 * 8 and cache.hits == 3 * 8 - len(distinct)


def test_a_bad_cache_size_is_one_line():
    with pytest.raises(ValueError, match=r"^loss.cache_mb must be a number of MiB >= 0, got -1$"):
        SurfaceLoss(cache_mb=-1)
    with pytest.raises(ValueError, match=r"^loss.cache_mb must be a number of MiB >= 0, got nan$"):
        HausdorffDTLoss(cache_mb=float("nan"))
