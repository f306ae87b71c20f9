"""A command-line override's value as Hydra's grammar types it, and as run names and tables show it.

In the bottom layer because both ``app`` (run and job names) and ``sweep`` (searched parameters, tables) read
overrides, and they do not import each other.
"""

from __future__ import annotations

import functools
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from segsweep.runs.console import significant


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def override_value(text: str) -> Any:
    """An override's value as Hydra's grammar types it (float, int, str, ``interval(...)``); the text if it does not parse."""
    try:
        return _parser().parse_override(f"key={text}").value()
    except HydraException:
        return text


def shown_value(text: str) -> str:
    """An override's value as the tables show it: a float at 4 significant digits (as job dirs are named), else as is."""
    value = override_value(text)
    return significant(value) if isinstance(value, float) else text
