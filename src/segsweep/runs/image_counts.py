"""test_image_counts.npz beside metrics.json: every test image's per-class intersection and union pixel counts."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segsweep.runs.files import write_atomic

COUNTS_FILE = "test_image_counts.npz"


def write_image_counts(run_dir: str | Path, intersection: np.ndarray, union: np.ndarray, class_names: Sequence[str]) -> Path:
    """intersection and union: int64 [images, classes] in test-loader order."""
    arrays = {"intersection": intersection.astype(np.int64), "union": union.astype(np.int64), "classes": np.array(class_names)}
    return write_atomic(Path(run_dir) / COUNTS_FILE, lambda file: np.savez_compressed(file, **arrays))


class ImageCountsError(ValueError):
    """A counts file that cannot be read or does not hold what ``write_image_counts`` writes; the message says why."""


def read_image_counts(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"intersection", "union", "classes"}`` of a run; None when it has no counts file, ImageCountsError when the
    file is unreadable or its counts are not [images, classes] non-negative integers with intersection <= union."""
    path = Path(run_dir) / COUNTS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names, intersection, union = data["classes"], data["intersection"], data["union"]
    except (OSError, ValueError, KeyError, EOFError, AttributeError, TypeError, zipfile.BadZipFile) as error:
        # AttributeError/TypeError: a plain .npy array, not an archive of named arrays
        raise ImageCountsError(f"{COUNTS_FILE} unreadable ({type(error).__name__})") from None
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ImageCountsError(f"{COUNTS_FILE}: classes must be a list of names")
    for name, counts in (("intersection", intersection), ("union", union)):
        if counts.dtype.kind not in "iu" or counts.shape != (len(counts), len(names)):
            raise ImageCountsError(f"{COUNTS_FILE}: {name} must be integer counts of shape [images, {len(names)}]")
        if (counts < 0).any():
            raise ImageCountsError(f"{COUNTS_FILE}: {name} holds negative counts")
    if intersection.shape != union.shape or (intersection > union).any():
        raise ImageCountsError(f"{COUNTS_FILE}: intersection must not exceed union, image by image")
    return {"intersection": intersection, "union": union, "classes": [str(name) for name in names]}
