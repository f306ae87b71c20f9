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


# Overlays' colours, the same for every dataset: saturated and far from what the classes look like (a dataset's own
# palette often is what the class looks like: the scenes draw their cars, pedestrians and road in their mask colours,
# Cityscapes' sky is sky blue), so a blended overlay stands out from the image. Sasha Trubetskoy's 20 distinct
# colours, ordered so that the scenes' classes (sky/background, road, car, pedestrian) get the most distant ones.
OVERLAY_COLORS: tuple[Color, ...] = (
    (255, 225, 25), (70, 240, 240), (0, 130, 200), (240, 50, 230), (245, 130, 48), (210, 245, 60), (230, 25, 75),
    (60, 180, 75), (145, 30, 180), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


def overlay_colors(count: int) -> tuple[Color, ...]:
    """The overlay colours of ``count`` classes: `OVERLAY_COLORS`, then golden-ratio hues."""
    return OVERLAY_COLORS[:count] + distinct_colors(count)[len(OVERLAY_COLORS) :]


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

    @property
    def overlay_colors(self) -> tuple[Color, ...]:
        """What overlays on images draw the classes in (`OVERLAY_COLORS`); ``colors`` are the masks' palette."""
        return overlay_colors(len(self.names))

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
