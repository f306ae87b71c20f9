"""The classes of a dataset (names, drawing colours, ignore index): what everything downstream of the datamodule knows of it."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The "void" label of Cityscapes/VOC-style masks (as in torchvision's segmentation references): never scored.
IGNORE_INDEX = 255

Color = tuple[int, int, int]


def distinct_colors(count: int) -> tuple[Color, ...]:
    """``count`` well-separated RGB colours (golden-ratio hues), for datasets that name no colours."""
    colors = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.95 if index % 2 == 0 else 0.7)
        colors.append((round(red * 255), round(green * 255), round(blue * 255)))
    return tuple(colors)


@dataclass(frozen=True)
class DatasetClasses:
    """Class ``i`` is ``names[i]``, drawn in ``colors[i]``; mask pixels equal to ``ignore_index`` are never scored."""

    names: tuple[str, ...]
    colors: tuple[Color, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("classes: a dataset needs at least one class name")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"classes: class names must be unique, got {list(self.names)}")
        if len(self.colors) != len(self.names):
            raise ValueError(f"classes: {len(self.names)} names but {len(self.colors)} colours")
        if 0 <= self.ignore_index < len(self.names):
            raise ValueError(f"classes: ignore_index={self.ignore_index} is a class index (0..{len(self.names) - 1})")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def create(
        cls, names: Sequence[str], colors: Sequence[Sequence[int]] | None = None, ignore_index: int = IGNORE_INDEX
    ) -> DatasetClasses:
        """From plain lists; missing colours are generated."""
        palette = distinct_colors(len(names)) if colors is None else tuple(tuple(int(c) for c in color) for color in colors)
        return cls(tuple(str(name) for name in names), palette, int(ignore_index))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, for checkpoints (``weights_only=True``) and metrics.json."""
        return {"names": list(self.names), "colors": [list(color) for color in self.colors], "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetClasses:
        return cls.create(data["names"], data.get("colors"), data.get("ignore_index", IGNORE_INDEX))
