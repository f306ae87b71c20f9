"""loss=boundary (Kervadec et al. 2019): the signed distance maps and the boundary term as the paper defines them,
the region loss under the paper's schedule, and the epoch the module hands it."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from segsweep.app.build import build_module
from segsweep.models.losses import BoundaryLoss, GeneralizedDiceLoss, SurfaceLoss
from segsweep.models.losses.boundary import signed_distance_maps

from .test_losses import make_batch


def test_signed_distance_maps_hand_computed():
    target = torch.tensor([[[0, 0, 1, 1, 1]]])
    maps = signed_distance_maps(target, num_classes=3)
    # outside: the distance to the mask; inside: minus (the distance to the outside - 1); an absent class: zeros
    expected = [[-1, 0, 1, 2, 3], [2, 1, 0, -1, -2], [0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(maps[0, :, 0].numpy(), expected)
    diagonal = signed_distance_maps(torch.tensor([[[1, 0], [0, 0]]]), num_classes=2)
    assert diagonal[0, 1, 1, 1] == pytest.approx(2**0.5)  # Euclidean


def test_the_boundary_term_is_the_mean_of_probabilities_times_distances_over_foreground_and_valid_pixels():
    logits, target = make_batch(b=2, h=9, w=8, ignore_fraction=0.2)
    valid = (target != 255).unsqueeze(1)
    distances = signed_distance_maps(target, 4)
    expected = (logits.softmax(1) * distances * valid)[:, 1:].sum() / (valid.sum() * 3)
    torch.testing.assert_close(SurfaceLoss()(logits, target), expected)
    with_background = (logits.softmax(1) * distances * valid).sum() / (valid.sum() * 4)
    torch.testing.assert_close(SurfaceLoss(include_background=True)(logits, target), with_background)


def test_the_boundary_term_is_lowest_for_the_truth():
    _, target = make_batch(b=2, h=12, w=12)
    perfect = 50.0 * torch.nn.functional.one_hot(target, 4).movedim(-1, 1).float()
    wrong = perfect.roll(1, dims=1)
    assert SurfaceLoss()(perfect, target) < 0 < SurfaceLoss()(wrong, target)


@pytest.mark.parametrize(("epoch", "alpha"), [(0, 1.0), (50, 0.5), (99, 0.01), (1000, 0.01)])
def test_the_region_weight_falls_by_a_step_per_epoch_to_its_minimum(epoch, alpha):
    logits, target = make_batch(ignore_fraction=0.1)
    logits.requires_grad_(True)
    loss_fn = BoundaryLoss({"_target_": "segsweep.models.losses.dice.GeneralizedDiceLoss"})
    loss_fn.set_epoch(epoch)
    assert loss_fn.region_weight == pytest.approx(alpha)
    value = loss_fn(logits, target)
    expected = alpha * GeneralizedDiceLoss()(logits, target) + (1 - alpha) * SurfaceLoss()(logits, target)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match=r"^loss.region_step=-1, loss.min_region_weight=0.01: expected"):
        BoundaryLoss(GeneralizedDiceLoss(), region_step=-1)
    with pytest.raises(ValueError, match=r"^loss.region: expected a loss config with a _target_"):
        BoundaryLoss("gdl")


def test_the_module_hands_the_loss_each_training_epoch(make_config):
    cfg = make_config("debug=fast", "loss=boundary", "trainer.max_epochs=3", "trainer.limit_val_batches=0")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    assert isinstance(module.loss, BoundaryLoss) and isinstance(module.loss.region, GeneralizedDiceLoss)
    seen = []
    original = module.loss.set_epoch
    module.loss.set_epoch = lambda epoch: (seen.append(epoch), original(epoch))
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    assert seen == [0, 1, 2] and module.loss.region_weight == pytest.approx(0.98)
