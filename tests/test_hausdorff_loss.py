"""The Hausdorff-distance loss (Karimi & Salcudean 2019, HD-DT): MONAI's HausdorffDTLoss as the reference definition."""

from __future__ import annotations

import pytest
import torch
from monai.losses import HausdorffDTLoss as MonaiHausdorffDTLoss

from segsweep.data.classes import IGNORE_INDEX
from segsweep.models.losses.hausdorff import HausdorffDTLoss, boundary_distances


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_equal_to_monai_on_random_logits(include_background, alpha):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 24, 20, generator=generator) * 3
    target = torch.randint(0, 4, (2, 24, 20), generator=generator)
    ours = HausdorffDTLoss(alpha=alpha, include_background=include_background)(logits, target)
    reference = MonaiHausdorffDTLoss(alpha=alpha, include_background=include_background, softmax=True, to_onehot_y=True)
    assert torch.allclose(ours, reference(logits, target.unsqueeze(1)), rtol=1e-5, atol=1e-6)


def test_ignored_pixels_add_nothing_and_the_loss_has_gradients():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 3, 16, 16, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (1, 16, 16), generator=generator)
    ignored = target.clone()
    ignored[:, :, 8:] = IGNORE_INDEX
    loss = HausdorffDTLoss()(logits, ignored)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[:, :, :, :8].abs().sum() > 0
    assert logits.grad[:, :, :, 8:].abs().sum() == 0  # no error counted where the truth is ignored


def test_a_confident_right_answer_costs_almost_nothing_and_a_far_miss_costs_more_than_a_near_one():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[:, 10:20, 10:20] = 1
    right = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20 - 10
    loss = HausdorffDTLoss()
    near, far = right.clone(), right.clone()
    near[:, :, 20, 10:20] = torch.tensor([-10.0, 10.0]).view(2, 1)  # one row grown onto the border
    far[:, :, 30, 10:20] = torch.tensor([-10.0, 10.0]).view(2, 1)  # the same pixels, 10 rows away
    assert loss(right, target) < 1e-6 < loss(near, target) < loss(far, target)


def test_distances_are_to_the_boundary_inside_and_out_and_zero_without_one():
    mask = torch.zeros(1, 2, 1, 7, dtype=torch.bool)
    mask[0, 0, 0, 3:] = True
    mask[0, 1] = True  # covers the image: no boundary
    distances = boundary_distances(mask)
    assert distances[0, 0, 0].tolist() == [3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]
    assert distances[0, 1].abs().sum() == 0
