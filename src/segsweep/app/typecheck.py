"""Config values checked against the type hints of what they configure, before any work: one line naming the key.

Every node with a ``_target_`` (data, model, loss, optimizer, scheduler, trainer, callbacks, logger) is checked
against its target's signature, so a new parameter of a network or loss is covered without a list to keep; a
dataclass in a hint (``data.scene`` is a SceneSpec) is checked field by field. Hints this module cannot judge (a
class it does not know) accept the value: the target's own checks still run. (Which check does what:
``app/validation.py``.)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

# Top-level keys that configure no _target_, with their types.
TOP_LEVEL: dict[str, Any] = {"seed": int, "threads": int | Literal["auto"] | None}
# The keys of eval and predict, which configure no _target_ (null: keep the checkpoint's or the default value).
ENTRY_POINT_TYPES: dict[str, dict[str, Any]] = {
    "eval": {
        "threads": int | None,
        "progress": bool,
        **{f"data.{key}": int | None for key in ("image_size", "test_size", "batch_size", "num_workers", "data_seed")},
        "trainer.limit_test_batches": int | float | None,
    },
    "predict": {
        "threads": int | None,
        "progress": bool,
        "tile_batch": int,
        "count": int,
        "overlap": float,
        "alpha": float,
        "max_pixels": int | None,
        "scene_seed": int | None,
    },
}
# Nodes without a _target_ that are keyword arguments of a class all the same.
IMPLICIT_TARGETS = {"module": "segsweep.models.module.SegmentationModule"}
# Keys whose config value the code turns into the argument (a class-weight strategy name -> a tensor): checked there.
CODE_SUPPLIED = {"loss": ("class_weights", "ignore_index")}
_SEQUENCES = (list, tuple, Sequence, Iterable)
_MAPPINGS = (dict, Mapping)


def check_types(cfg: DictConfig, top_level: Mapping[str, Any] = TOP_LEVEL) -> None:
    """ValueError naming the first key whose value cannot be what its target's signature (or ``top_level``) asks for."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(resolved, dict)
    for key, expected in top_level.items():
        *parents, name = key.split(".")
        node: Any = resolved
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node:
            check_value(key, node[name], expected)
    for path, node, target in _targets(resolved, ""):
        hints, written = _hints(target), OmegaConf.select(cfg, path) if path else cfg
        for key, value in node.items():
            # an interpolated value (scheduler.T_max: ${trainer.max_epochs}) is judged where it is written
            interpolated = isinstance(written, DictConfig) and OmegaConf.is_interpolation(written, key)
            supplied = key in CODE_SUPPLIED.get(path, ())
            if not str(key).startswith("_") and key in hints and not (interpolated or supplied):
                check_value(f"{path}.{key}", value, hints[key])


def check_value(key: str, value: Any, hint: Any) -> None:
    """ValueError ``key=value: expected ...`` unless ``value`` can be ``hint``."""
    if value == "???":  # missing: the entry point asks for it by name
        return
    spec = _dataclass_in(hint)
    if spec is not None and isinstance(value, dict):
        field_hints = _hints(spec)
        for name, item in value.items():
            if name in field_hints:
                check_value(f"{key}.{name}", item, field_hints[name])
        return
    if _accepts(hint, value) is False:
        shown = "null" if value is None else value if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{key}={shown}: expected {_describe(hint)}")


def _targets(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(key path, node, target) of every node that configures a class or function."""
    if not isinstance(node, dict):
        return
    target = node.get("_target_") if isinstance(node.get("_target_"), str) else IMPLICIT_TARGETS.get(path)
    if target is not None:
        yield path, node, target
    for key, child in node.items():
        yield from _targets(child, f"{path}.{key}" if path else str(key))


def _hints(target: Any) -> dict[str, Any]:
    """Parameter -> type hint of a target (a dotted name or an object); a parameter without a hint gets its default's type."""
    try:
        obj = get_object(target) if isinstance(target, str) else target
        function = obj.__init__ if isinstance(obj, type) else obj
        hints = typing.get_type_hints(function)
        parameters = inspect.signature(obj).parameters
    except Exception:  # not importable or hints that do not evaluate: instantiate reports those itself
        return {}
    for name, parameter in parameters.items():
        default = parameter.default
        if name not in hints and isinstance(default, (bool, int, float, str)):
            hints[name] = float if type(default) is int else type(default)  # an int default also takes a float
    return hints


def _dataclass_in(hint: Any) -> type | None:
    candidates = typing.get_args(hint) if _is_union(hint) else (hint,)
    return next((item for item in candidates if dataclasses.is_dataclass(item) and isinstance(item, type)), None)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether a config value (plain YAML: None, bool, int, float, str, list, dict) can be ``hint``; None if unknown."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if _is_union(hint):
        answers = [_accepts(arg, value) for arg in args]
        return True if True in answers else None if None in answers else False
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None) or hint is None:
        return value is None
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        numeric = isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
        return numeric
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return isinstance(value, (list, tuple)) and _items_accepted(origin, args, value)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return isinstance(value, str)
    if isinstance(hint, type) and isinstance(value, (bool, int, float, str)):
        return isinstance(value, hint)  # a scalar is no Tensor, Accelerator, ...
    return None


def _items_accepted(origin: Any, args: tuple[Any, ...], value: Sequence[Any]) -> bool | None:
    if not args:
        return True
    if origin is tuple and args[-1] is not Ellipsis:
        if len(args) != len(value):
            return False
        answers = [_accepts(arg, item) for arg, item in zip(args, value)]
    else:
        answers = [_accepts(args[0], item) for item in value]
    return False not in answers


def _describe(hint: Any) -> str:
    """The allowed values of a hint in words: ``an integer or null``, ``one of 'a', 'b'``."""
    if _is_union(hint):
        args = typing.get_args(hint)
        literals = [value for arg in args if typing.get_origin(arg) is Literal for value in typing.get_args(arg)]
        others = [arg for arg in args if typing.get_origin(arg) is not Literal]
        # classes a YAML value cannot be (Tensor, Accelerator) are left out when something else is allowed
        shown = [arg for arg in others if _from_yaml(arg)] or others
        words = ([f"one of {', '.join(map(repr, literals))}"] if literals else []) + [_describe(arg) for arg in shown]
        return " or ".join(dict.fromkeys(words))
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    if hint in _NAMES:
        return _NAMES[hint]
    origin = typing.get_origin(hint) or hint
    if origin in _SEQUENCES:
        return "a list"
    if origin in _MAPPINGS:
        return "a mapping"
    return f"a {getattr(hint, '__name__', str(hint))}"


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _from_yaml(hint: Any) -> bool:
    """Whether a plain YAML value can be of this hint (a scalar, list, mapping or path), not only an object made in code."""
    origin = typing.get_origin(hint) or hint
    is_path = isinstance(hint, type) and issubclass(hint, PurePath)
    return hint in _NAMES or origin in _SEQUENCES or origin in _MAPPINGS or is_path or dataclasses.is_dataclass(hint)
