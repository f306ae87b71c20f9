"""The losses the imbalance study adds: reference values, equality with MONAI where claimed, finite gradients,
absent classes, ignored pixels, float32 under autocast."""

from __future__ import annotations

import pytest
import torch
from monai.losses import GeneralizedDiceLoss as MonaiGeneralizedDice
from monai.losses import TverskyLoss as MonaiTversky

from segsweep.models.losses import DiceLoss, GeneralizedDiceLoss, LovaszSoftmaxLoss, TopKCrossEntropyLoss, TverskyLoss
from segsweep.models.metrics import confusion_matrix, iou_from_confusion

NEW_LOSSES = (
    lambda: LovaszSoftmaxLoss(),
    lambda: LovaszSoftmaxLoss(per_image=True),
    lambda: TverskyLoss(),
    lambda: TverskyLoss(gamma=4 / 3),
    lambda: GeneralizedDiceLoss(),
    lambda: TopKCrossEntropyLoss(k=10),
)


def batch(seed: int = 0, classes: int = 4, shape: tuple[int, int, int] = (3, 12, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], classes, *shape[1:], generator=generator, requires_grad=True)
    target = torch.randint(0, classes, shape, generator=generator)
    return logits, target


def test_lovasz_of_hard_predictions_is_the_jaccard_loss():
    _, target = batch()
    prediction = torch.randint(0, 4, target.shape, generator=torch.Generator().manual_seed(5))
    logits = torch.nn.functional.one_hot(prediction, 4).movedim(-1, 1).float() * 1000
    iou = iou_from_confusion(confusion_matrix(target, prediction, 4))
    present = torch.stack([(target == label).any() for label in range(4)])
    expected = (1 - iou[present]).mean()
    assert float(LovaszSoftmaxLoss()(logits, target)) == pytest.approx(float(expected), abs=1e-6)


def test_lovasz_per_image_is_the_mean_of_single_image_losses():
    logits, target = batch()
    loss = LovaszSoftmaxLoss(per_image=True)
    singles = [LovaszSoftmaxLoss()(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    assert float(loss(logits, target).detach()) == pytest.approx(float(torch.stack(singles).mean().detach()), rel=1e-6)


def test_lovasz_per_image_leaves_fully_ignored_images_out_of_the_mean():
    logits, target = batch()
    target[1] = 255  # the middle image has no valid pixel: no loss, not a loss of 0
    kept = [LovaszSoftmaxLoss()(logits[i : i + 1], target[i : i + 1]) for i in (0, 2)]
    loss = LovaszSoftmaxLoss(per_image=True)(logits, target)
    assert float(loss.detach()) == pytest.approx(float(torch.stack(kept).mean().detach()), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad[1].any()


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_tversky_equals_monai(alpha, beta):
    logits, target = batch()
    ours = TverskyLoss(alpha=alpha, beta=beta)(logits, target)
    theirs = MonaiTversky(softmax=True, to_onehot_y=True, batch=True, alpha=alpha, beta=beta)(logits, target.unsqueeze(1))
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)


def test_tversky_with_equal_costs_is_dice_and_its_focal_form_is_a_power():
    logits, target = batch()
    tversky = TverskyLoss(alpha=0.5, beta=0.5)(logits, target)
    assert float(tversky) == pytest.approx(float(DiceLoss()(logits, target)), abs=1e-6)
    plain = TverskyLoss(batch=True)
    focal = TverskyLoss(gamma=4 / 3)
    per_class = []
    for label in range(4):
        probs = logits.softmax(1)[:, label]
        truth = (target == label).float()
        tp = (probs * truth).sum()
        index = (tp + 1e-5) / (tp + 0.3 * (probs * (1 - truth)).sum() + 0.7 * ((1 - probs) * truth).sum() + 1e-5)
        per_class.append(1 - index)
    assert float(plain(logits, target)) == pytest.approx(float(torch.stack(per_class).mean()), abs=1e-6)
    assert float(focal(logits, target)) == pytest.approx(float((torch.stack(per_class) ** 0.75).mean()), abs=1e-6)


@pytest.mark.parametrize("drop_class", [None, 3])
def test_generalized_dice_equals_monai_also_with_an_absent_class(drop_class):
    logits, target = batch(seed=2)
    if drop_class is not None:
        target = target.masked_fill(target == drop_class, 0)
    ours = GeneralizedDiceLoss()(logits, target)
    theirs = MonaiGeneralizedDice(softmax=True, to_onehot_y=True, batch=True)(logits, target.unsqueeze(1))
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)


def test_top_k_is_the_mean_of_the_hardest_pixels():
    logits, target = batch()
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    hardest = per_pixel.sort(descending=True).values[: int(per_pixel.numel() * 0.1)]
    assert float(TopKCrossEntropyLoss(k=10)(logits, target)) == pytest.approx(float(hardest.mean()), rel=1e-6)
    assert float(TopKCrossEntropyLoss(k=100)(logits, target)) == pytest.approx(float(per_pixel.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="loss.k"):
        TopKCrossEntropyLoss(k=0)


@pytest.mark.parametrize("make", NEW_LOSSES)
def test_gradients_are_finite_also_for_saturated_and_perfect_predictions(make):
    _, target = batch()
    for scale in (1.0, 100.0):
        logits = (torch.nn.functional.one_hot(target, 4).movedim(-1, 1).float() * scale).requires_grad_()
        loss = make()(logits, target)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("make", NEW_LOSSES)
def test_absent_classes_and_ignored_pixels(make):
    logits, target = batch()
    target = target.masked_fill(target == 3, 1)  # class 3 absent
    target[:, :4] = 255  # ignored rows
    loss = make()(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()  # an absent class's infinite Generalized Dice weight made every one NaN
    changed = logits.detach().clone()
    changed[:, :, :4] = torch.randn_like(changed[:, :, :4]) * 10  # logits of ignored pixels do not matter
    assert float(make()(changed, target)) == pytest.approx(float(loss), abs=1e-5)
    everything_ignored = torch.full_like(target, 255)
    logits.grad = None
    nothing = make()(logits, everything_ignored)
    nothing.backward()
    assert float(nothing) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("make", NEW_LOSSES)
def test_float32_under_bf16_autocast(make):
    logits, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = make()(logits.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32


def test_class_weights_weight_the_class_mean():
    logits, target = batch()
    weights = torch.tensor([1.0, 1.0, 1.0, 3.0])
    for loss in (LovaszSoftmaxLoss, TverskyLoss):
        weighted, plain = loss(class_weights=weights)(logits, target), loss()(logits, target)
        assert float(weighted) != pytest.approx(float(plain))
        assert torch.isfinite(weighted)
