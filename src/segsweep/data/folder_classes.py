"""A folder dataset's classes.yaml (names, colours, ignore index, mapping) and how its masks read by it.

Single-channel masks (modes L, P, 1, I;16, I): the pixel value is the class, through ``mapping`` when given (unmapped
values are void). RGB(A) masks: the colour is the class, by ``colors`` (``ignore_colors`` are void). Anything else
is a FolderDataError: one line naming the file (and the values or colours).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from segsweep.data.classes import DatasetClasses

CLASSES_FILE = "classes.yaml"
CLASSES_KEYS = ("names", "colors", "ignore_index", "mapping", "ignore_colors")
# Values a raw mask pixel may take (8- and 16-bit masks); wider ones are an error naming the file.
_RAW_VALUES = 1 << 16
_INVALID = -1


class FolderDataError(ValueError):
    """Bad data in a folder dataset; the message is one line naming the file."""


@dataclass(frozen=True)
class FolderClasses:
    """classes.yaml, parsed and checked."""

    classes: DatasetClasses
    colors_given: bool
    mapping: dict[int, int] | None
    ignore_colors: tuple[tuple[int, int, int], ...]
    text: bytes  # the file's bytes, part of the scan cache key


def _color(value: Any, where: str) -> tuple[int, int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        raise FolderDataError(f"{where}: a colour is [r, g, b] with integers 0..255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def load_classes(root: Path) -> FolderClasses:
    """``root/classes.yaml``; one line naming the file and the key otherwise."""
    path = root / CLASSES_FILE
    if not root.is_dir():
        raise FolderDataError(f"data.root={root}: no such directory")
    if not path.is_file():
        raise FolderDataError(f"{path}: missing; a folder dataset needs classes.yaml with `names: [...]` (README: Your own data)")
    text = path.read_bytes()
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise FolderDataError(f"{path}: not valid YAML{where} ({problem})") from None
    if not isinstance(content, dict):
        raise FolderDataError(f"{path}: expected a mapping with `names: [...]`, got {type(content).__name__}")
    for key in content:
        if key not in CLASSES_KEYS:
            raise FolderDataError(f"{path}: unknown key {key!r} (choose from {', '.join(CLASSES_KEYS)})")
    names = content.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise FolderDataError(f"{path}: `names` must be a non-empty list of class names, got {names!r}")
    if len(names) > 255:
        raise FolderDataError(f"{path}: at most 255 classes, got {len(names)}")
    colors = content.get("colors")
    if colors is not None:
        if not isinstance(colors, list) or len(colors) != len(names):
            count = len(colors) if isinstance(colors, list) else colors
            raise FolderDataError(f"{path}: `colors` needs one [r, g, b] per name ({len(names)}), got {count}")
        colors = [_color(color, f"{path}: colors[{i}]") for i, color in enumerate(colors)]
        if len(set(colors)) != len(colors):
            raise FolderDataError(f"{path}: `colors` must be distinct (they identify classes in RGB masks)")
    ignore_index = content.get("ignore_index", 255)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or not 0 <= ignore_index <= 255:
        raise FolderDataError(f"{path}: `ignore_index` must be an integer 0..255, got {ignore_index!r}")
    try:
        classes = DatasetClasses.create(names, colors, ignore_index)
    except ValueError as error:
        raise FolderDataError(f"{path}: {str(error).removeprefix('classes: ')}") from None
    mapping = _mapping(content.get("mapping"), classes, path)
    ignore_colors = content.get("ignore_colors") or []
    if not isinstance(ignore_colors, list):
        raise FolderDataError(f"{path}: `ignore_colors` must be a list of [r, g, b], got {ignore_colors!r}")
    ignored = tuple(_color(color, f"{path}: ignore_colors[{i}]") for i, color in enumerate(ignore_colors))
    if colors is not None and set(ignored) & set(colors):
        raise FolderDataError(f"{path}: `ignore_colors` {sorted(set(ignored) & set(colors))} are also class colours")
    return FolderClasses(classes, colors is not None, mapping, ignored, text)


def _mapping(mapping: Any, classes: DatasetClasses, path: Path) -> dict[int, int] | None:
    """raw value -> class index; a class may be given by name, and the ignore index is allowed as a target."""
    if mapping is None:
        return None
    if not isinstance(mapping, dict) or not mapping:
        raise FolderDataError(f"{path}: `mapping` must be a non-empty mapping of raw mask value -> class, got {mapping!r}")
    result = {}
    for raw, target in mapping.items():
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw < _RAW_VALUES:
            raise FolderDataError(f"{path}: mapping key {raw!r} is not a mask value (an integer 0..{_RAW_VALUES - 1})")
        if isinstance(target, str):
            if target not in classes.names:
                raise FolderDataError(f"{path}: mapping {raw}: {target!r} is not one of the names")
            target = classes.names.index(target)
        if (
            not isinstance(target, int)
            or isinstance(target, bool)
            or not (0 <= target < classes.num_classes or target == classes.ignore_index)
        ):
            raise FolderDataError(
                f"{path}: mapping {raw}: {target!r} is neither a class (0..{classes.num_classes - 1}, or a name) "
                f"nor the ignore index {classes.ignore_index}"
            )
        result[raw] = target
    return result


# ---------------------------------------------------------------------------------------------------- masks


class MaskReader:
    """A mask file as uint8 [H, W] class indices (the ignore index for void), by the rules of classes.yaml.

    Single-channel masks (modes L, P, 1, I;16, I): the pixel value is the class, through ``mapping`` when given.
    RGB(A) masks: the colour is the class, by ``colors`` (``ignore_colors`` are void).
    """

    def __init__(self, spec: FolderClasses) -> None:
        classes = spec.classes
        self.ignore_index, self.num_classes = classes.ignore_index, classes.num_classes
        self.mapped = spec.mapping is not None
        if spec.mapping is None:
            lut = np.full(_RAW_VALUES, _INVALID, dtype=np.int16)
            lut[: classes.num_classes] = np.arange(classes.num_classes)
            lut[classes.ignore_index] = classes.ignore_index
        else:
            lut = np.full(_RAW_VALUES, classes.ignore_index, dtype=np.int16)
            for raw, target in spec.mapping.items():
                lut[raw] = target
        self.lut = lut
        self.colors_given = spec.colors_given
        codes = {_code(color): index for index, color in enumerate(classes.colors)} if spec.colors_given else {}
        codes.update({_code(color): classes.ignore_index for color in spec.ignore_colors})
        order = sorted(codes)
        self.color_codes = np.array(order, dtype=np.int64)
        self.color_classes = np.array([codes[code] for code in order], dtype=np.uint8)

    def read(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                mode = image.mode
                if mode in ("RGB", "RGBA", "RGBX"):
                    return self._from_colors(np.asarray(image.convert("RGB")), path)
                if mode == "LA":
                    image = image.getchannel(0)
                elif mode == "PA":
                    image = image.convert("P")  # keeps the indices
                elif mode not in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
                    raise FolderDataError(f"{path}: mask mode {mode} is not supported (use a single-channel index PNG)")
                raw = np.asarray(image)
        except FolderDataError:
            raise
        except UnidentifiedImageError:
            raise FolderDataError(f"{path}: not an image file (unrecognised format)") from None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FolderDataError(f"{path}: unreadable mask, truncated or corrupt ({detail})") from None
        return self._from_values(raw, path)

    def _from_values(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if raw.dtype != np.uint8:
            raw = raw.astype(np.int64)
            if raw.size and (raw.min() < 0 or raw.max() >= _RAW_VALUES):
                raise FolderDataError(f"{path}: mask values outside 0..{_RAW_VALUES - 1} (min {raw.min()}, max {raw.max()})")
        labels = self.lut[raw]
        if not self.mapped and (labels == _INVALID).any():
            bad = np.unique(raw[labels == _INVALID])
            shown = ", ".join(str(int(value)) for value in bad[:8]) + (", ..." if len(bad) > 8 else "")
            raise FolderDataError(
                f"{path}: mask values {shown} are neither a class (0..{self.num_classes - 1}) nor the ignore index "
                f"{self.ignore_index}; map them with `mapping:` in classes.yaml"
            )
        return labels.astype(np.uint8)

    def _from_colors(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        if not len(self.color_codes):
            raise FolderDataError(
                f"{path}: an RGB colour mask, but classes.yaml has no `colors` to read it by "
                "(add colors, or save the masks as single-channel index PNGs)"
            )
        codes = _code_array(rgb)
        slots = np.searchsorted(self.color_codes, codes).clip(max=len(self.color_codes) - 1)
        known = self.color_codes[slots] == codes
        if not known.all():
            bad = np.unique(codes[~known])
            shown = ", ".join(str(list(_decode(int(code)))) for code in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise FolderDataError(f"{path}: mask colours {shown} are not in classes.yaml colors")
        return self.color_classes[slots]


def _code(color: Sequence[int]) -> int:
    return (int(color[0]) << 16) | (int(color[1]) << 8) | int(color[2])


def _code_array(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _decode(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


@contextmanager
def quiet_image_reads() -> Iterator[None]:
    """read_image notes every greyscale/RGBA conversion; per item and epoch that is noise (the scan reports modes once)."""
    logger = logging.getLogger("segsweep.data.images")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)
