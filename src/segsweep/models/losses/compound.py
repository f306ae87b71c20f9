"""A compound loss: the weighted sum of any of segsweep's losses (Dice + CE, Dice + TopK, Dice + Focal, ...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from torch import Tensor, nn

from segsweep.data.classes import IGNORE_INDEX


class CompoundLoss(nn.Module):
    """``sum_t weight_t * loss_t(logits, target)`` over the named ``terms``, in their order.

    ``terms`` maps a name to ``{"weight": float, "loss": ...}``, where ``loss`` is a loss module or a loss config (a
    mapping with ``_target_``, as conf/loss/*.yaml). Terms are named rather than listed so that an override or a search
    can address one (``loss.terms.ce.weight=0.5``). A config is built here with the compound's ``ignore_index`` and,
    when the compound has ``class_weights`` (``loss.class_weights``: a strategy name or a list, resolved by the app),
    with those for every term whose config takes class weights; a term's own list applies when the compound has none.
    """

    def __init__(
        self,
        terms: Mapping[str, Mapping[str, Any]],
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("loss.terms: a compound loss needs at least one term")
        losses, weights = {}, {}
        for name, term in terms.items():
            if not isinstance(term, Mapping) or set(term) != {"weight", "loss"}:
                raise ValueError(f"loss.terms.{name}: expected exactly the keys weight and loss, got {_keys(term)}")
            weight = term["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"loss.terms.{name}.weight={weight!r}: expected a number")
            weights[name] = float(weight)
            losses[name] = build_loss(f"loss.terms.{name}.loss", term["loss"], class_weights, ignore_index)
        self.terms = nn.ModuleDict(losses)
        self.weights = weights

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total: Tensor | None = None
        for name, loss in self.terms.items():
            value = self.weights[name] * loss(logits, target)
            total = value if total is None else total + value
        assert total is not None  # at least one term, checked at construction
        return total


def build_loss(key: str, loss: Any, class_weights: Tensor | Sequence[float] | None, ignore_index: int) -> nn.Module:
    """A loss module inside another (at config ``key``): given, or built from its config with the outer loss's ignore
    index and, where the config takes them, its class weights."""
    if isinstance(loss, nn.Module):
        return loss
    if not isinstance(loss, Mapping) or "_target_" not in loss:
        raise ValueError(f"{key}: expected a loss config with a _target_, got {loss!r}")
    options: dict[str, Any] = {"ignore_index": ignore_index}
    if class_weights is not None and "class_weights" in loss:
        options["class_weights"] = class_weights
    module = instantiate(loss, **options)
    if not isinstance(module, nn.Module):
        raise ValueError(f"{key}: {loss['_target_']} is not a loss module")
    return module


def _keys(term: Any) -> str:
    return ", ".join(map(str, term)) if isinstance(term, Mapping) else type(term).__name__
