import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from segsweep.models.losses import CrossEntropyLoss, DiceCELoss, DiceLoss, FocalLoss

C = 4
IGNORE = 255
WEIGHTS = torch.tensor([0.5, 1.0, 2.0, 0.25])

LOSSES = {
    "ce": lambda w: CrossEntropyLoss(class_weights=w),
    "ce_smoothed": lambda w: CrossEntropyLoss(class_weights=w, label_smoothing=0.1),
    "focal": lambda w: FocalLoss(gamma=2.0, class_weights=w),
    "dice": lambda w: DiceLoss(class_weights=w),
    "dice_per_image": lambda w: DiceLoss(batch=False, class_weights=w),
    "dice_no_background": lambda w: DiceLoss(include_background=False, class_weights=w),
    "dice_ce": lambda w: DiceCELoss(dice_weight=0.5, ce_weight=2.0, class_weights=w),
}
ALL_LOSSES = pytest.mark.parametrize("name", LOSSES)
WEIGHTS_OR_NONE = pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])


def make_batch(b=2, h=6, w=5, ignore_fraction=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(b, C, h, w, generator=gen)
    target = torch.randint(0, C, (b, h, w), generator=gen)
    target[torch.rand(b, h, w, generator=gen) < ignore_fraction] = IGNORE
    return logits, target


def naive_focal(logits, target, gamma, weights):
    """-alpha_t (1 - p_t)^gamma log p_t pixel by pixel in float64, averaged over the summed alpha_t."""
    total = norm = 0.0
    b, _, h, w = logits.shape
    for n, i, j in itertools.product(range(b), range(h), range(w)):
        t = int(target[n, i, j])
        if t == IGNORE:
            continue
        p_t = torch.softmax(logits[n, :, i, j].double(), dim=0)[t].item()
        alpha = 1.0 if weights is None else weights[t].item()
        total += -alpha * (1 - p_t) ** gamma * math.log(p_t)
        norm += alpha
    return total / norm


@WEIGHTS_OR_NONE
def test_focal_with_gamma_zero_is_cross_entropy(weights):
    logits, target = make_batch(ignore_fraction=0.2)
    expected = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE)
    torch.testing.assert_close(FocalLoss(gamma=0.0, class_weights=weights)(logits, target), expected, rtol=0, atol=1e-7)


@WEIGHTS_OR_NONE
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_matches_naive_formula(gamma, weights):
    logits, target = make_batch(ignore_fraction=0.2)
    loss = FocalLoss(gamma=gamma, class_weights=weights)(logits, target)
    assert loss.item() == pytest.approx(naive_focal(logits, target, gamma, weights), rel=1e-5)


@WEIGHTS_OR_NONE
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(weights, label_smoothing):
    logits, target = make_batch(ignore_fraction=0.2)
    loss = CrossEntropyLoss(class_weights=weights, label_smoothing=label_smoothing)(logits, target)
    expected = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE, label_smoothing=label_smoothing)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [True, False])
def test_dice_matches_monai(include_background, batch):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = make_batch(b=3, seed=1)
    reference = monai_losses.DiceLoss(
        include_background=include_background,
        softmax=True,
        to_onehot_y=True,
        batch=batch,
        smooth_nr=1e-3,
        smooth_dr=1e-3,
    )
    loss = DiceLoss(include_background=include_background, smooth=1e-3, batch=batch)(logits, target)
    torch.testing.assert_close(loss, reference(logits, target.unsqueeze(1)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
def test_weighted_dice_is_weighted_mean_of_per_class_losses(include_background):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = make_batch(seed=2)
    reference = monai_losses.DiceLoss(
        include_background=include_background, softmax=True, to_onehot_y=True, batch=True, reduction="none"
    )
    per_class = reference(logits, target.unsqueeze(1)).flatten()
    weights = WEIGHTS if include_background else WEIGHTS[1:]
    expected = (per_class * weights).sum() / weights.sum()
    loss = DiceLoss(include_background=include_background, class_weights=WEIGHTS)(logits, target)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_dice_of_perfect_prediction_with_absent_classes_is_zero():
    # Only classes 0 and 1 occur; classes 2 and 3 are absent and confidently not predicted.
    _, target = make_batch()
    target = target % 2
    logits = 100 * F.one_hot(target, C).movedim(-1, 1).float()
    for loss_fn in (DiceLoss(), DiceLoss(batch=False), DiceLoss(class_weights=WEIGHTS)):
        assert loss_fn(logits, target).item() == pytest.approx(0.0, abs=1e-6)


@ALL_LOSSES
def test_ignored_pixels_do_not_count(name):
    # Per-image Dice needs one image: dropping pixels from several images would merge them.
    logits, target = make_batch(b=1 if name == "dice_per_image" else 2, ignore_fraction=0.3)
    valid = target != IGNORE
    logits_valid = logits.movedim(1, -1)[valid].T.reshape(1, C, -1, 1)
    target_valid = target[valid].reshape(1, -1, 1)
    loss_fn = LOSSES[name](WEIGHTS)
    torch.testing.assert_close(loss_fn(logits, target), loss_fn(logits_valid, target_valid), rtol=1e-6, atol=1e-6)


@ALL_LOSSES
@WEIGHTS_OR_NONE
@pytest.mark.parametrize("case", ["absent_classes", "some_ignored", "all_ignored"])
def test_gradients_are_finite(name, weights, case):
    logits, target = make_batch(ignore_fraction={"absent_classes": 0.0, "some_ignored": 0.3, "all_ignored": 1.0}[case])
    if case == "absent_classes":
        target = target % 2
    logits.requires_grad_(True)
    loss = LOSSES[name](weights)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    if case == "all_ignored":
        assert loss.item() == 0.0
        assert not logits.grad.any()


@ALL_LOSSES
def test_float32_under_bf16_autocast(name):
    logits, target = make_batch(ignore_fraction=0.2)
    logits = logits.bfloat16()
    loss_fn = LOSSES[name](WEIGHTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(logits, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn(logits.float(), target))


def test_dice_ce_is_weighted_sum_of_dice_and_ce():
    logits, target = make_batch(ignore_fraction=0.2)
    loss_fn = DiceCELoss(
        dice_weight=0.3,
        ce_weight=1.7,
        class_weights=WEIGHTS,
        include_background=False,
        smooth=1e-3,
        label_smoothing=0.1,
    )
    loss = loss_fn(logits, target)
    dice = DiceLoss(include_background=False, smooth=1e-3, class_weights=WEIGHTS)(logits, target)
    ce = CrossEntropyLoss(class_weights=WEIGHTS, label_smoothing=0.1)(logits, target)
    torch.testing.assert_close(loss, 0.3 * dice + 1.7 * ce)


@ALL_LOSSES
def test_class_weights_are_a_non_persistent_buffer(name):
    loss_fn = LOSSES[name]([0.5, 1.0, 2.0, 0.25])
    buffers = dict(loss_fn.named_buffers())
    assert buffers and all(torch.equal(b, WEIGHTS) for b in buffers.values())
    assert not loss_fn.state_dict()
    # A bf16-true trainer casts buffers to bf16; the loss must still run (in float32).
    logits, target = make_batch()
    assert loss_fn.bfloat16()(logits, target).dtype == torch.float32


@ALL_LOSSES
def test_wrong_number_of_class_weights(name):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=r"^loss\.class_weights: got 3 weights but the model predicts 4 classes$"):
        LOSSES[name](torch.ones(3))(logits, target)


@ALL_LOSSES
@pytest.mark.parametrize("label", [-1, C])
def test_target_out_of_range(name, label):
    logits, target = make_batch()
    target[0, 0, 0] = label
    message = rf"target labels \[{label}\] are outside \[0, 4\) and are not ignore_index=255"
    with pytest.raises(ValueError, match=message):
        LOSSES[name](None)(logits, target)


@ALL_LOSSES
@pytest.mark.parametrize("weights", [[1.0, -1.0, 1.0, 1.0], [1.0, float("inf"), 1.0, 1.0], [0.0] * 4])
def test_invalid_class_weights(name, weights):
    with pytest.raises(ValueError, match=r"^loss\.class_weights: "):
        LOSSES[name](weights)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9, 1.0, 2.0])
def test_focal_saturated_logits_give_finite_loss_and_gradients(gamma: float) -> None:
    """Saturated logits (p_t rounds to 1 or 0) must not make NaN gradients for any gamma, notably gamma < 1."""
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [0.0, 0.0]]).reshape(1, 3, 1, 2).requires_grad_()
    target = torch.tensor([[[0, 0]]])
    loss = FocalLoss(gamma=gamma)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
