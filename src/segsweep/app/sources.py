"""What predict reads: image files, folders of them, lists of those, or generated scenes, each with an output name."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import ListConfig

from segsweep.data.images import list_images
from segsweep.data.scenes import SceneSpec, generate_scenes

log = logging.getLogger(__name__)

GENERATE = "generate"
# input=generate looks this far into split "predict" for scenes in which every class is visible (at 1024 px some 15 s
# when none is: a class the scene config never draws)
SCENE_SEARCH = 200


@dataclass
class Source:
    """One image to segment: a file, or generated scene ``index``."""

    name: str
    path: Path | None = None
    index: int | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"generated scene {self.index}"


def parse_size(size: Any) -> tuple[int, int]:
    """``size``: an int (square) or ``[height, width]``."""
    values = list(size) if isinstance(size, (list, tuple, ListConfig)) else [size]
    if len(values) == 1:
        values = values * 2
    try:
        height, width = (int(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or [height, width], got {size!r}") from None
    if len(values) != 2 or height < 8 or width < 8:
        raise ValueError(f"size must be an int or [height, width] of at least 8 px, got {size!r}")
    return height, width


def collect_sources(inputs: Any, count: int, failures: list[dict[str, Any]]) -> list[Source]:
    """Every image the ``input`` value names; inputs that name nothing usable are recorded in ``failures``."""
    items = list(inputs) if isinstance(inputs, (list, tuple, ListConfig)) else [inputs]
    if not items:
        raise ValueError("input: give an image file, a folder, a list of them, or 'generate'")
    sources: list[Source] = []
    for item in items:
        text = str(item)
        if text == GENERATE:
            if count < 1:
                raise ValueError(f"count must be >= 1 for input=generate, got {count}")
            sources.extend(Source(name="", index=index) for index in range(count))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            images, skipped = list_images(path)
            if skipped:
                names = ", ".join(entry.name for entry in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
                log.info("%s: skipped %d entries that are not image files (%s)", path, len(skipped), names)
            if not images:
                failures.append({"input": str(path), "status": "failed", "error": f"{path}: folder has no image files"})
            sources.extend(Source(name="", path=image) for image in images)
        elif path.exists():
            sources.append(Source(name="", path=path))
        else:
            failures.append({"input": str(path), "status": "failed", "error": f"{path}: no such file or directory"})
    name_outputs(sources)
    return sources


def every_class_scenes(spec: SceneSpec, seed: int, count: int, size: tuple[int, int], num_classes: int) -> list[int]:
    """The first ``count`` scenes of split "predict" (at ``size``) in which every class is visible, so that a
    prediction shows them all; scenes that lack a class fill in (logged) if fewer turn up in the first `SCENE_SEARCH`."""
    height, width = size
    chunk = max(1, (1 << 22) // (height * width))  # scenes a call: some 4 megapixels
    found: list[int] = []
    for start in range(0, SCENE_SEARCH, chunk):
        indices = torch.arange(start, min(start + chunk, SCENE_SEARCH))
        _, masks = generate_scenes(spec, seed, "predict", indices, height, width)
        for index, mask in zip(indices.tolist(), masks):
            if len(found) < count and torch.bincount(mask.flatten().long(), minlength=num_classes).gt(0).all():
                found.append(index)
        if len(found) == count:
            return found
    log.warning(
        "input=generate: only %d of the first %d scenes show every class; scenes lacking one fill in", len(found), SCENE_SEARCH
    )
    return found + [index for index in range(count + len(found)) if index not in found][: count - len(found)]


def name_outputs(sources: list[Source]) -> None:
    """Output name stems: the file stem, unless two inputs share it (a.png, a.jpg: a_png, a_jpg); generated scenes by index."""
    files = [source.path for source in sources if source.path is not None]
    stems = Counter(path.stem for path in files)
    names = Counter(path.name for path in files)
    taken: set[str] = set()
    for source in sources:
        if source.path is None:
            base = f"scene_{source.index:04d}"
        elif stems[source.path.stem] > 1 and names[source.path.name] == 1:
            base = source.path.name.replace(".", "_")
        else:
            base = source.path.stem
        name, number = base, 1
        while name in taken:  # the same file given twice, or same name in two folders
            number += 1
            name = f"{base}_{number}"
        taken.add(name)
        source.name = name
