"""loss=compound: a weighted sum of segsweep's losses; dice_ce is one (the same numbers as the DiceCELoss of before)."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsweep.app.build import load_module
from segsweep.models.losses import CrossEntropyLoss, DiceCELoss, DiceLoss, FocalLoss, TopKCrossEntropyLoss
from segsweep.models.losses.compound import CompoundLoss
from segsweep.models.losses.dice import GeneralizedDiceLoss
from segsweep.runs.allowlist import UnsafeConfigError, check_saved_config
from tests.test_losses import WEIGHTS, make_batch
from tests.test_security import checkpoint_naming


def loss_of(make_config, *overrides, weights=WEIGHTS):
    cfg = make_config(*overrides)
    return instantiate(cfg.loss, ignore_index=255, **({} if weights is None else {"class_weights": weights}))


def value_and_grad(loss_fn, logits, target):
    logits = logits.clone().requires_grad_(True)
    value = loss_fn(logits, target)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_ce_config_is_bit_identical_to_dice_plus_ce_as_dice_ce_computed_it(make_config, weights, seed):
    """The DiceCELoss of before returned ``dice_weight * dice + ce_weight * ce``: loss and gradients equal to the bit."""
    logits, target = make_batch(b=3, h=9, w=7, ignore_fraction=0.2, seed=seed)
    compound = loss_of(make_config, "loss=dice_ce", weights=weights)
    dice = DiceLoss(class_weights=weights, ignore_index=255)
    ce = CrossEntropyLoss(class_weights=weights, ignore_index=255)
    assert isinstance(compound, CompoundLoss) and list(compound.terms) == ["dice", "ce"]
    value, grad = value_and_grad(compound, logits, target)
    expected, expected_grad = value_and_grad(lambda x, y: 1.0 * dice(x, y) + 1.0 * ce(x, y), logits, target)
    assert torch.equal(value, expected) and torch.equal(grad, expected_grad)
    legacy, legacy_grad = value_and_grad(DiceCELoss(class_weights=weights, ignore_index=255), logits, target)
    assert torch.equal(value, legacy) and torch.equal(grad, legacy_grad)


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("dice_topk", lambda w: TopKCrossEntropyLoss(k=10.0, class_weights=w)),
        ("dice_focal", lambda w: FocalLoss(gamma=2.0, class_weights=w)),
    ],
)
def test_ready_compounds_are_dice_plus_their_second_loss(make_config, name, second):
    logits, target = make_batch(b=2, h=16, w=16, ignore_fraction=0.1)
    compound = loss_of(make_config, f"loss={name}")
    expected = DiceLoss(class_weights=WEIGHTS)(logits, target) + second(WEIGHTS)(logits, target)
    torch.testing.assert_close(compound(logits, target), expected, rtol=0, atol=1e-6)


def test_weights_scale_terms_and_overrides_address_a_term(make_config):
    logits, target = make_batch(ignore_fraction=0.2)
    compound = loss_of(make_config, "loss=dice_ce", "loss.terms.dice.weight=0.3", "loss.terms.ce.weight=1.7")
    dice, ce = DiceLoss(class_weights=WEIGHTS)(logits, target), CrossEntropyLoss(class_weights=WEIGHTS)(logits, target)
    torch.testing.assert_close(compound(logits, target), 0.3 * dice + 1.7 * ce)
    added = loss_of(make_config, "loss=compound", "+loss@loss.terms.ce.loss=ce", "+loss.terms.ce.weight=0.5")
    torch.testing.assert_close(added(logits, target), dice + 0.5 * ce)


def test_class_weights_and_ignore_index_reach_every_term_that_takes_them():
    terms = {
        "dice": {"weight": 1.0, "loss": {"_target_": "segsweep.models.losses.dice.DiceLoss", "class_weights": None}},
        "gdl": {"weight": 1.0, "loss": {"_target_": "segsweep.models.losses.dice.GeneralizedDiceLoss"}},
    }
    compound = CompoundLoss(OmegaConf.create(terms), class_weights=WEIGHTS, ignore_index=7)
    assert torch.equal(compound.terms["dice"].class_weights, WEIGHTS)
    assert isinstance(compound.terms["gdl"], GeneralizedDiceLoss)
    assert compound.terms["dice"].ignore_index == compound.terms["gdl"].ignore_index == 7


CE = {"_target_": "segsweep.models.losses.cross_entropy.CrossEntropyLoss"}


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({}, "loss.terms: a compound loss needs at least one term"),
        ({"ce": {"loss": CE}}, "loss.terms.ce: expected"),
        ({"ce": {"weight": "x", "loss": CE}}, "loss.terms.ce.weight='x'"),
        ({"ce": {"weight": 1.0, "loss": "ce"}}, "loss.terms.ce.loss: expected a loss config"),
    ],
)
def test_a_bad_term_is_one_line_naming_its_key(terms, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")) as error:
        CompoundLoss(terms)
    assert "\n" not in str(error.value)


def test_the_allowlist_accepts_the_compound_and_refuses_a_target_nested_in_its_terms(make_config):
    config = OmegaConf.to_container(make_config("loss=dice_focal"), resolve=True)
    check_saved_config(config, "x.ckpt")
    config["loss"]["terms"]["focal"]["loss"] = {"_target_": "builtins.open", "file": "x", "mode": "w"}
    with pytest.raises(UnsafeConfigError, match=r"^x.ckpt: config key loss.terms.focal.loss._target_ names builtins.open"):
        check_saved_config(config, "x.ckpt")


def test_a_checkpoint_naming_dice_ce_loss_with_its_weights_still_loads(fast_run, tmp_path):
    """A run saved before dice_ce became a compound names DiceCELoss and its dice_weight/ce_weight: kept as a subclass."""
    old = {"_target_": "segsweep.models.losses.dice.DiceCELoss", "dice_weight": 0.3, "ce_weight": 1.7, "class_weights": None}
    module, _ = load_module(checkpoint_naming(fast_run, tmp_path / "best.ckpt", old))
    assert isinstance(module.loss, DiceCELoss) and module.loss.weights == {"dice": 0.3, "ce": 1.7}
    logits, target = make_batch()
    expected = 0.3 * DiceLoss()(logits, target) + 1.7 * CrossEntropyLoss()(logits, target)
    assert torch.equal(module.loss(logits, target), expected)
