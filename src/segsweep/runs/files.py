"""Atomic file writes (a killed process never leaves a truncated file behind, nor half of a set) and the text of CSV files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temp file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_orphan_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files ``write_atomic`` leaves when its process is killed mid-write; only while nothing writes there."""
    directory = Path(directory)
    orphans = [path for path in directory.glob(".*.tmp") if path.is_file()] if directory.is_dir() else []
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_files(files: dict[Path, bytes]) -> list[Path]:
    """Write every file atomically; if one fails, remove the ones already written, then re-raise."""
    written: list[Path] = []
    try:
        for path, data in files.items():
            written.append(write_atomic(path, lambda file, data=data: file.write(data)))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda file: file.write(text.encode()))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text; the columns are every key in order of appearance, NaN is an empty cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()})
    return buffer.getvalue()
