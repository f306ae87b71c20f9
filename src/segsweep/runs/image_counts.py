"""test_image_counts.npz beside metrics.json: every test image's per-class intersection and union pixel counts."""

from __future__ import annotations

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


def read_image_counts(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"intersection", "union", "classes"}`` of a run, or None when it has no (readable) counts file."""
    path = Path(run_dir) / COUNTS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(name) for name in data["classes"]]
            counts = {"intersection": data["intersection"], "union": data["union"], "classes": names}
    except (OSError, ValueError, KeyError):
        return None
    if counts["intersection"].shape != counts["union"].shape or counts["intersection"].ndim != 2:
        return None
    return counts
