"""Atomic file writes (a killed process never leaves a truncated file behind, nor half of a set) and the text of CSV files."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# a write that failed for want of room: on the device, in a quota, or under the process's file size limit
NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit exceeded"}


class NoRoomError(OSError):
    """A file that could not be written for want of room, named in one line; the file it replaces is intact."""


class _Writes:
    """The temp file as ``write`` sees it, keeping the OSError of a failed write: torch.save turns that error into a
    RuntimeError ("unexpected pos ...") without its errno."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temp file beside ``path``, fsync, then rename it over ``path``; a full disk is a NoRoomError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    writes = None
    try:
        with os.fdopen(handle, "wb") as file:
            writes = _Writes(file)
            write(writes)  # type: ignore[arg-type]  # a file in all but name
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = error if isinstance(error, OSError) else getattr(writes, "error", None)
        if cause is not None and cause.errno in NO_ROOM:
            raise NoRoomError(f"{NO_ROOM[cause.errno]} while writing {path}") from error
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
