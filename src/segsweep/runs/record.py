"""metrics.json, the record of one run: its schema, and the only code that writes, marks failed or reads it.

Schema (every key always present unless marked optional)::

    status        "completed" | "fitted" | "failed" | "pruned"   completed: fitted and tested; fitted: written when the
                  fit ends, before the test (a run killed during its test is not finished, and is continued by a rerun);
                  pruned: stopped early by a search's pruner (app.pruning), never tested
    error         str | null          why it failed ("<Type>: <message>"), or when the pruner stopped it
    config        {...}               the resolved config of the run
    best          {"val/mIoU": float | null, "epoch": int | null}
    test          {"test/mIoU": float, "test/iou/<class>": float, ...}   empty until tested
    history       [{"epoch": int, "val/<metric>": float, ..., "time_s": float, "steps": int, "images_seen": int}, ...]
                  one entry per epoch; steps: optimizer steps so far, images_seen: training images so far (repeats
                  of the sampler counted); both absent in records written before they were counted
    manifest      {...} | null        provenance (segsweep.runs.manifest); ``resumes``: [{"time": str, "command": [...],
                  "overrides": [...], "from_epoch": int}], one entry per command that continued the run

Epochs are counted from 1 (``epoch`` 3 is the third), as the log lines, the progress bar and the report count them;
records written before counted them from 0 (their history starts at 0) and are read as counted from 1.
    classes       optional: {"names": [...], "colors": [[r,g,b], ...], "ignore_index": int, "train_pixels": [int, ...]}
    class_weights optional: {"<class>": float, ...}, when the loss used class weights
    failed_attempts optional: [{"time": str, "error": str, "command": [...]}], later commands that failed
                  on a completed run (a completed record is never turned into a failed one)

The file is always replaced atomically (write to a temp file, then rename).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from segsweep.runs.files import write_json_atomic
from segsweep.runs.manifest import now

RECORD_FILE = "metrics.json"
STATUSES = ("completed", "fitted", "failed", "pruned")  # pruned: app.pruning


class RecordError(ValueError):
    """A metrics.json that cannot be read or does not have the schema; the message names the file and the key."""


def record_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RECORD_FILE


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    return write_json_atomic(path, record)


def failed_record(config: dict[str, Any], error: str) -> dict[str, Any]:
    """The record of a run that failed before it had any results."""
    return {
        "status": "failed",
        "error": error,
        "config": config,
        "best": {"val/mIoU": None, "epoch": None},
        "test": {},
        "history": [],
    }


def existing_record(path: str | Path) -> dict[str, Any]:
    """The record already at ``path``: empty if there is none, or if it is unreadable (it is then rewritten whole)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return load_record(path)
    except RecordError:
        return {}


def completed_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of ``run_dir`` if it holds a completed (fitted and tested) run; None otherwise (none, unreadable,
    fitted only, failed)."""
    record = existing_record(record_path(run_dir))
    return record if record.get("status") == "completed" else None


def epochs_from_one(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` with its epochs counted from 1: one written before (its epochs counted from 0) shifted by one."""
    if not any(entry.get("epoch") == 0 for entry in history):
        return history
    return [{**entry, "epoch": entry["epoch"] + 1} if _is_number(entry.get("epoch")) else entry for entry in history]


def best_of(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's ``best``: the epoch of the highest val mIoU in ``history`` (nulls when no epoch has one)."""
    scored = [entry for entry in history if not math.isnan(entry.get("val/mIoU", math.nan))]
    if not scored:
        return {"val/mIoU": None, "epoch": None}
    top = max(scored, key=lambda entry: entry["val/mIoU"])
    return {"val/mIoU": top["val/mIoU"], "epoch": int(top["epoch"])}


def write_run(
    path: str | Path,
    status: str,
    *,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    test: dict[str, float],
    manifest: dict[str, Any] | None,
    error: str | None = None,
    classes: dict[str, Any] | None = None,
    train_pixels: list[int] | None = None,
    class_weights: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """Write the record of a run from what the command training it knows; returns it (None when not written).

    What the command does not know (an empty ``history`` or ``test``, no ``manifest``: e.g. a spawned DDP test in fresh
    processes) is kept from the record already there. A completed record is never turned into a failed one: a failure
    after it is a ``failed_attempts`` entry (``mark_failed``), not a rewrite.
    """
    existing = existing_record(path)
    if status == "failed" and existing.get("status") == "completed":
        return None
    history, test = history or existing.get("history", []), test or existing.get("test", {})
    manifest = manifest or existing.get("manifest")
    optional: dict[str, Any] = {}
    if class_weights is not None:
        optional["class_weights"] = class_weights
    if classes is not None:
        # the report's "rarest class" is the one with the fewest training pixels
        optional["classes"] = {**classes, **({"train_pixels": train_pixels} if train_pixels is not None else {})}
    record = {
        **existing,
        "status": status,
        "error": error,
        "config": config,
        "best": best_of(history),
        "test": test,
        "history": history,
        "manifest": None if manifest is None else {**manifest, "end_time": now()},
        **optional,
    }
    write_record(path, record)
    return record


def recorded_value(record: dict[str, Any], name: str) -> float | None:
    """A metric a finished record holds: ``val/mIoU_best`` (its best), a ``test/`` metric; None if it has none."""
    value = (record.get("best") or {}).get("val/mIoU") if name == "val/mIoU_best" else (record.get("test") or {}).get(name)
    return float(value) if _is_number(value) else None


def mark_failed(path: str | Path, config: dict[str, Any], error: str, own_run: bool = False) -> None:
    """Record a failure at ``path``: a new failed record, or an entry in a completed record's ``failed_attempts``
    (its results are kept). A record already marked failed is left as it is: it holds the first error.

    ``own_run``: the failure belongs to the run the record describes (its fit completed earlier in this same command,
    then its test failed): the record turns ``failed``, its results kept.
    """
    path = Path(path)
    try:
        existing = _read_json(path) if path.is_file() else None
    except RecordError:  # unreadable: there are no results to keep
        existing = None
    status = existing.get("status") if isinstance(existing, dict) else None
    if status == "fitted" or (status == "completed" and own_run):
        write_record(path, {**existing, "status": "failed", "error": error})
        return
    if status == "completed":
        attempt = {"time": now(), "error": error, "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}
        write_record(path, {**existing, "failed_attempts": [*existing.get("failed_attempts", []), attempt]})
        return
    if status == "failed":
        return
    write_record(path, failed_record(config, error))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except RecursionError:  # json nests as deep as the file does
        raise RecordError(f"{path}: unreadable (nested too deep)") from None
    except (OSError, ValueError) as error:
        raise RecordError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numbers(path: Path, key: str, mapping: Any, allow_null: bool = False) -> None:
    if not isinstance(mapping, dict):
        raise RecordError(f"{path}: {key} must be an object, got {type(mapping).__name__}")
    for name, value in mapping.items():
        if not (_is_number(value) or (allow_null and value is None)):
            raise RecordError(f"{path}: {key}.{name} must be a number, got {value!r}")
        if _is_number(value) and math.isinf(value):  # NaN is a diverged run's honest value, infinity never a metric
            raise RecordError(f"{path}: {key}.{name} must be finite, got {value!r}")


def _check_classes(path: Path, classes: Any) -> None:
    if not isinstance(classes, dict):
        raise RecordError(f"{path}: classes must be an object, got {type(classes).__name__}")
    names = classes.get("names")
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        raise RecordError(f"{path}: classes.names must be a non-empty list of names, got {names!r}")
    for key in ("train_pixels", "colors"):
        if key in classes and not (isinstance(classes[key], list) and len(classes[key]) == len(names)):
            raise RecordError(f"{path}: classes.{key} must be a list of {len(names)} (one per class), got {classes[key]!r}")


def load_record(path: str | Path) -> dict[str, Any]:
    """A metrics.json checked against the schema above; RecordError naming the file and the bad key otherwise."""
    path = Path(path)
    record = _read_json(path)
    if not isinstance(record, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if record.get("status") not in STATUSES:
        raise RecordError(f"{path}: status must be one of {', '.join(STATUSES)}, got {record.get('status')!r}")
    _check_numbers(path, "test", record.get("test", {}))
    _check_numbers(path, "best", record.get("best") or {}, allow_null=True)
    history = record.get("history", [])
    if not isinstance(history, list):
        raise RecordError(f"{path}: history must be a list, got {type(history).__name__}")
    for position, entry in enumerate(history):
        _check_numbers(path, f"history[{position}]", entry)
    if "classes" in record:
        _check_classes(path, record["classes"])
    counted = epochs_from_one(history)
    if counted is not history:  # a record written when epochs counted from 0
        best = record.get("best") or {}
        shifted = {"epoch": best["epoch"] + 1} if _is_number(best.get("epoch")) else {}
        record = {**record, "history": counted, "best": {**best, **shifted}}
    return record


def test_metric(record: dict[str, Any], name: str = "test/mIoU") -> float:
    """A test metric of a record; NaN when it was not recorded."""
    value = (record.get("test") or {}).get(name)
    return float(value) if _is_number(value) else math.nan
