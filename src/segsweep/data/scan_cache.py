"""A folder scan's cache file: written with a digest of its contents, trusted only when its schema and digest hold.

The cache lives outside the dataset (``~/.cache/segsweep/folder``), where anything may edit it; class pixel counts
read from it set class weights and repeat factors, so an entry that does not have the shape the scan writes, or
contents that do not match their digest, make the scan run again rather than feed a training run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segsweep.runs.files import write_json_atomic

log = logging.getLogger(__name__)

SCAN_VERSION = 2  # 2: the digest of the pairs


def digest(pairs: dict[str, list[Any]]) -> str:
    """sha256 of the pairs' canonical JSON."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_entry(entry: Any, num_classes: int) -> bool:
    """[height, width, image mode, class pixel counts], as the scan writes one: counts of at most height x width pixels."""
    if not (isinstance(entry, list) and len(entry) == 4):
        return False
    height, width, mode, counts = entry
    return (
        _is_count(height)
        and _is_count(width)
        and isinstance(mode, str)
        and isinstance(counts, list)
        and len(counts) == num_classes
        and all(_is_count(count) for count in counts)
        and sum(counts) <= height * width
    )


def read_scan(path: Path, names: Iterable[str], num_classes: int) -> dict[str, list[Any]] | None:
    """The cached scan of the pairs ``names`` at ``path``; None (scan again) when missing, unreadable, of another
    version, lacking a pair, not of the schema, or not matching its digest."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
        pairs = cached["pairs"]
        valid = (
            cached.get("version") == SCAN_VERSION
            and isinstance(pairs, dict)
            and cached.get("digest") == digest(pairs)
            and all(name in pairs and _valid_entry(pairs[name], num_classes) for name in names)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        valid = False
    if not valid:
        log.warning("%s: scan cache unreadable or altered, scanning again", path)
        return None
    return pairs


def write_scan(path: Path, root: Path, pairs: dict[str, list[Any]]) -> None:
    """Cache a scan (a warning, not an error, when it cannot be written: the next run scans again)."""
    try:
        write_json_atomic(path, {"version": SCAN_VERSION, "root": str(root), "digest": digest(pairs), "pairs": pairs})
    except OSError as error:
        log.warning("%s: scan not cached (%s); the next run scans again", path, error.strerror or error)
