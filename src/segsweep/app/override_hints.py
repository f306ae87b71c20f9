"""What a command line that does not compose meant: a misspelt group, another option's key, a value to quote.

The group a misspelt key names, the group option a key belongs to, the quoted form of a value Hydra's grammar cannot
read.

Hydra answers these with a suggestion that fails next (``+los=dice``, ``+data.root=...``) or with a parser message
(``mismatched input '=' expecting <EOF>``); ``app/preflight.py`` asks here for the line that says what to type instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segsweep.app.config import CONFIG_DIR

_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def quoted_form(override: str) -> str | None:
    """``key=value`` whose value holds ``=`` (a run dir named ``loss=ce,seed=7``) as the shell must pass it; None when
    the override parses as it is, or quoting would not help."""
    key, equals, value = override.partition("=")
    if not equals or "=" not in value or value.startswith(("'", '"')):
        return None
    parser = OverridesParser.create()
    try:
        parser.parse_override(override)
        return None
    except HydraException:
        pass
    try:
        parser.parse_override(f'{key}="{value}"')
    except HydraException:
        return None
    return f"'{key}=\"{value}\"'"


def unknown_key_line(error: BaseException, config_name: str, overrides: Sequence[str]) -> str | None:
    """For an override of a key the config lacks (Hydra: "Could not override 'X'"), the line that says what it meant:
    another option of its group has the key (``data.root`` is data=folder's), or the nearest group or key names it
    (``los`` -> ``loss``); None when neither is known. Composes in the caller's ``initialize_config_dir``."""
    found = _NOT_OVERRIDABLE.search(str(error))
    if found is None:
        return None
    key = found.group(1)
    given = next((override for override in overrides if override.partition("=")[0] == key), key)
    groups = _groups()
    choices = [override for override in overrides if override.partition("=")[0] in groups]
    base = _compose(config_name, choices)
    if base is None:
        return None
    head, _, rest = key.partition(".")
    if rest and head in groups:
        others = [choice for choice in choices if choice.partition("=")[0] != head]
        owners = [option for option in groups[head] if _has_key(config_name, [*others, f"{head}={option}"], key)]
        current = OmegaConf.select(base, f"hydra.runtime.choices.{head}", default=None)
        owners = [option for option in owners if option != current]
        if owners:
            bases = [option for option in owners if not set(_parents(head, option)) & set(owners)] or owners
            presets = [option for option in owners if option not in bases]
            named = " or ".join(f"{head}={option}" for option in bases)
            if presets:
                named += f" (or its presets: {', '.join(f'{head}={option}' for option in presets)})"
            return f"{given}: {key} belongs to {named}, not to {head}={current}: e.g. {head}={bases[0]} {given}"
    return _nearest_line(base, key, given, groups)


def _nearest_line(base: DictConfig, key: str, given: str, groups: dict[str, list[str]]) -> str | None:
    """The first part of ``key`` the config lacks, and the nearest group or key to it: ``los=dice`` -> ``loss=dice``."""
    parts, node = key.split("."), base
    for depth, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        known = [str(name) for name in node] if isinstance(node, DictConfig) else []
        if depth == 0:
            known = sorted({*known, *groups} - {"hydra"})
        nearest = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
        if not nearest:
            return None
        where = ".".join(parts[:depth])
        meant = ".".join([*parts[:depth], nearest[0], *parts[depth + 1 :]])
        kind = "config group or key" if depth == 0 else f"key of {where}"
        value = given.partition("=")[2]
        suggestion = f"{meant}={value}" if value else meant
        return f"{given}: {'.'.join(parts[: depth + 1])} is no {kind}; did you mean {suggestion}?"
    return None


def _groups() -> dict[str, list[str]]:
    """Each config group of conf/ (a folder of YAML files) and its options."""
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(Path(CONFIG_DIR).iterdir())
        if folder.is_dir() and any(folder.glob("*.yaml"))
    }


def _parents(group: str, option: str) -> list[str]:
    """The options of its own group that a group option's defaults list extends (a dataset preset extends folder)."""
    try:
        defaults = OmegaConf.load(Path(CONFIG_DIR) / group / f"{option}.yaml").get("defaults") or []
    except (OSError, OmegaConfBaseException):
        return []
    return [entry for entry in defaults if isinstance(entry, str)]


def _compose(config_name: str, overrides: Sequence[str]) -> Any:
    try:
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return None


def _has_key(config_name: str, overrides: Sequence[str], key: str) -> bool:
    node: Any = _compose(config_name, overrides)
    for part in key.split("."):  # a walk, not OmegaConf.select: a mandatory key (data.root: ???) is a key too
        if not isinstance(node, DictConfig) or part not in node.keys():  # noqa: SIM118 (`in` is False for ???)
            return False
        node = node._get_node(part)
    return True


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The mandatory keys (``???``) ``node`` leaves unset, dotted, outside ``hydra``; nothing is resolved."""
    found = []
    for key in node:
        name = f"{prefix}{key}"
        if name == "hydra" or OmegaConf.is_interpolation(node, key):
            continue
        if OmegaConf.is_missing(node, key):
            found.append(name)
        elif isinstance(node[key], DictConfig):
            found += missing_keys(node[key], f"{name}.")
    return found
