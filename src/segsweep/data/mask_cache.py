"""Masks drawn from an annotation export, cached as index PNGs beside the folder scan's cache, one folder per key.

``<cache_dir>/masks/<format>-<key>/<image name>.png``, where the key digests everything the masks are drawn from (the
export's annotation files, its images' sizes and times, the classes chosen): an edited JSON draws the masks again into
a folder of its own, an unchanged one reuses them. A folder counts only once its ``complete.json`` is written, after
its last mask; masks are written atomically, so parallel jobs drawing the same export never read half a file. Old
folders are left behind like old scan files (delete ``<cache_dir>/masks`` to reclaim them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segsweep.data.folder_files import default_cache_dir
from segsweep.runs.files import write_atomic, write_json_atomic

MASKS_VERSION = 1
MARKER = "complete.json"


class MaskCache:
    """The cached masks of one export under one key (``key_text``: the bytes the masks depend on)."""

    def __init__(self, cache_dir: Path | None, kind: str, key_text: bytes) -> None:
        key = hashlib.sha256(f"segsweep-masks-{MASKS_VERSION}-{kind}\n".encode() + key_text).hexdigest()[:24]
        self.folder = (cache_dir or default_cache_dir()) / "masks" / f"{kind}-{key}"

    def path(self, name: str) -> Path:
        """Where the mask of the image named ``name`` (its path relative to data.root) is cached."""
        return self.folder / f"{name}.png"

    def complete(self, names: Sequence[str]) -> bool:
        """Whether every mask of ``names`` was drawn under this key (the marker lists them, the files exist)."""
        try:
            listed = json.loads((self.folder / MARKER).read_text()).get("names")
        except (OSError, ValueError, AttributeError):
            return False
        return listed == list(names) and all(self.path(name).is_file() for name in names)

    def write(self, name: str, mask: np.ndarray) -> None:
        """One uint8 [H, W] class-index mask, as an 8-bit PNG."""
        write_atomic(self.path(name), lambda file: Image.fromarray(mask.astype(np.uint8)).save(file, format="PNG"))

    def finish(self, names: Sequence[str]) -> None:
        """Mark the folder complete: written last, so a killed run leaves a folder that draws again."""
        write_json_atomic(self.folder / MARKER, {"version": MASKS_VERSION, "names": list(names)})
