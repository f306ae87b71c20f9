"""Own-data folders (data=folder) written for the tests: classes.yaml, and image/mask pairs of every mask kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

NAMES = ["sky", "road", "vehicle"]
COLORS = [[70, 130, 180], [128, 64, 128], [0, 0, 142]]


def classes_yaml(root: Path, **content) -> None:
    """``root`` (created) with a classes.yaml holding ``content``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump(content))


def image_for(mask: np.ndarray, seed: int) -> np.ndarray:
    """An RGB image whose colours follow ``mask`` (void black), with seeded noise."""
    rng = np.random.default_rng(seed + 1000)
    palette = np.array([[90, 140, 200], [110, 110, 110], [200, 40, 40], [0, 0, 0]] + [[0, 0, 0]] * 252, dtype=np.int64)
    pixels = palette[np.where(mask == 255, 3, mask)] + rng.integers(-15, 16, (*mask.shape, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_pair(root: Path, split: str, name: str, mask: np.ndarray, seed: int, image_format: str = "png", mask_kind: str = "L"):
    """An image (png, jpg, bmp) and its mask: L or P index PNG (through RAW when the dataset has a mapping) or RGB colours."""
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(mask, seed)).save(root / split / "images" / f"{name}.{image_format}")
    path = root / split / "masks" / f"{name}.png"
    if mask_kind == "rgb":
        colors = np.array(COLORS + [[0, 0, 0]] * 253, dtype=np.uint8)
        Image.fromarray(colors[np.where(mask == 255, 3, mask)]).save(path)
    elif mask_kind == "raw":  # Cityscapes-like raw ids, mapped by classes.yaml
        raw = np.select([mask == 0, mask == 1, mask == 2], [23, 7, 26], default=0).astype(np.uint8)
        Image.fromarray(raw, mode="L").save(path)
    elif mask_kind in ("P", "Praw"):  # indexed PNG: the index is the value (raw ids for "Praw")
        values = mask if mask_kind == "P" else np.select([mask == 0, mask == 1, mask == 2], [23, 7, 26], default=0)
        image = Image.fromarray(values.astype(np.uint8), mode="P")
        image.putpalette([channel for color in COLORS for channel in color] + [0] * (768 - 9))
        image.save(path)
    else:
        Image.fromarray(mask, mode="L").save(path)
