"""The grammar of conf/hparams_search/search_space: Hydra sweep overrides as Optuna distributions.

It is hydra-optuna-sweeper 1.3's grammar, read through Hydra's public override parser: ``choice(a, b)`` and
``shuffle(range(...))`` are categories; ``range(start, stop, step)`` steps from start to stop (both included, floats if
any bound is one); ``interval(low, high)`` is uniform (``int(interval(...))``: integers); ``tag(log, interval(...))`` is
log-uniform. Any other value is a fixed parameter, passed to every trial as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class SearchSpaceError(ValueError):
    """A searched parameter Optuna cannot draw; one line naming it."""


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; None for a fixed value."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(bound, float) for bound in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise SearchSpaceError(f"{override.input_line}: not a choice, range or interval")


def parse(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The searched parameters' distributions and the fixed parameters' values; a later override of a key wins."""
    searched: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    try:
        overrides = OverridesParser.create().parse_overrides(list(arguments))
    except HydraException as error:
        raise SearchSpaceError(str(error).splitlines()[0]) from None
    for override in overrides:
        name = override.get_key_element()
        try:
            drawn = distribution(override)
        except ValueError as error:  # Optuna's checks: low > high, a log range through 0, a step that does not fit
            raise SearchSpaceError(f"{name}: {error}") from None
        searched.pop(name, None)
        fixed.pop(name, None)
        if drawn is None:
            fixed[name] = override.get_value_element_as_str()
        else:
            searched[name] = drawn
    return searched, fixed


def grid_choices(name: str, drawn: BaseDistribution) -> list[Any]:
    """GridSampler's values of a parameter: a choice's, or a range's steps (as hydra-optuna-sweeper's: without the stop)."""
    if isinstance(drawn, CategoricalDistribution):
        return list(drawn.choices)
    if isinstance(drawn, (IntDistribution, FloatDistribution)) and drawn.step is not None and not drawn.log:
        count = int((drawn.high - drawn.low) // drawn.step)
        return [drawn.low + index * drawn.step for index in range(count)]
    raise SearchSpaceError(f"{name}: the grid sampler needs choice(...) or range(...), not a continuous interval")
