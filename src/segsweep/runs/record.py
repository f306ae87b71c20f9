"""metrics.json, the record of one run: its schema, and the only code that writes, marks failed or reads it.

Schema (every key always present unless marked optional)::

    status        "completed" | "failed" | "pruned"
    error         str | null          why it failed ("<Type>: <message>"), or when the pruner stopped it
    config        {...}               the resolved config of the run
    best          {"val/mIoU": float | null, "epoch": int | null}
    test          {"test/mIoU": float, "test/iou/<class>": float, ...}   empty until tested
    history       [{"epoch": int, "val/<metric>": float, ..., "time_s": float, "steps": int, "images_seen": int}, ...]
                  one entry per epoch; steps: optimizer steps so far, images_seen: training images so far (repeats
                  of the sampler counted); both absent in records written before they were counted
    manifest      {...} | null        provenance (segsweep.runs.manifest); ``resumes``: [{"time": str, "command": [...],
                  "overrides": [...], "from_epoch": int}], one entry per command that continued the run
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
STATUSES = ("completed", "failed", "pruned")  # pruned: stopped early by a search's pruner (app.pruning)


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


def note_recorded(error: BaseException) -> None:
    """Mark an exception as recorded in metrics.json, so an outer handler does not record the same failure again."""
    error._segsweep_recorded = True  # type: ignore[attr-defined]


def was_recorded(error: BaseException) -> bool:
    return bool(getattr(error, "_segsweep_recorded", False))


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
    if isinstance(existing, dict) and existing.get("status") == "completed":
        if own_run:
            write_record(path, {**existing, "status": "failed", "error": error})
            return
        attempt = {"time": now(), "error": error, "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}
        write_record(path, {**existing, "failed_attempts": [*existing.get("failed_attempts", []), attempt]})
        return
    if isinstance(existing, dict) and existing.get("status") == "failed":
        return
    write_record(path, failed_record(config, error))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
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
    return record


def test_metric(record: dict[str, Any], name: str = "test/mIoU") -> float:
    """A test metric of a record; NaN when it was not recorded."""
    value = (record.get("test") or {}).get(name)
    return float(value) if _is_number(value) else math.nan
