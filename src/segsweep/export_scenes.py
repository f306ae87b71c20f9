"""Write the synthetic scenes as a folder dataset: ``segsweep-export-scenes OUT_DIR`` / ``python -m segsweep.export_scenes``.

A worked example of the ``data=folder`` layout (README "Your own data"): ``classes.yaml`` (names and colours of the
scene classes), ``{train,val,test}/images/NNNNN.png`` (RGB) and ``{train,val,test}/masks/NNNNN.png`` (mode L, the
value is the class). The scenes are exactly those ``data=scenes`` generates for the same sizes and seed, so

    segsweep-export-scenes /tmp/scenes
    python -m segsweep.train data=folder data.root=/tmp/scenes data.crop_size=64 data.batch_size=16

trains on the same images as ``python -m segsweep.train`` (see the README for how the numbers compare).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from segsweep.app.config import CONFIG_DIR
from segsweep.data.scenes import SCENE_CLASSES, generate_scenes
from segsweep.data.scenes_datamodule import scene_spec

SPLITS = ("train", "val", "test")


def default_scene() -> dict[str, Any]:
    """``data.scene`` of conf/data/scenes.yaml: the scenes ``python -m segsweep.train`` trains on."""
    return OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "data" / "scenes.yaml").scene)  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """``S`` (square) or ``HxW`` (e.g. 384x512: 384 rows, 512 columns)."""
    parts = text.lower().split("x")
    try:
        height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected S or HxW (e.g. 64 or 384x512), got {text!r}") from None
    if len(parts) > 2 or height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"expected S or HxW of at least 8 px, got {text!r}")
    return height, width


def export(
    out_dir: Path,
    sizes: dict[str, int],
    image_size: int | tuple[int, int],
    seed: int,
    scene: dict[str, Any] | None = None,
    chunk: int = 64,
) -> Path:
    """Write the scenes of ``sizes`` (per split; 0: no such split folder) into ``out_dir``, which must be empty or new.

    Scene ``i`` of a split depends on (seed, split, i) alone, so generating in chunks bounds memory and changes nothing.
    """
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty directory")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    spec = scene_spec(scene if scene is not None else default_scene())
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = SCENE_CLASSES
    text = yaml.safe_dump(
        {"names": list(classes.names), "colors": [list(color) for color in classes.colors], "ignore_index": classes.ignore_index},
        default_flow_style=None,
        sort_keys=False,
    )
    size_text = str(height) if height == width else f"{height}x{width}"
    header = f"# the synthetic scenes (segsweep-export-scenes --image-size {size_text} --seed {seed})\n"
    (out_dir / "classes.yaml").write_text(header + text)
    for split in SPLITS:
        if sizes[split] == 0:
            continue
        images_dir, masks_dir = out_dir / split / "images", out_dir / split / "masks"
        images_dir.mkdir(parents=True)
        masks_dir.mkdir(parents=True)
        for start in range(0, sizes[split], chunk):
            indices = torch.arange(start, min(start + chunk, sizes[split]))
            images, masks = generate_scenes(spec, seed, split, indices, height, width)
            for index, image, mask in zip(indices.tolist(), images, masks):
                name = f"{index:05d}.png"
                Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(images_dir / name)
                Image.fromarray(mask.numpy().astype(np.uint8), mode="L").save(masks_dir / name)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="segsweep-export-scenes", description="Write the synthetic scenes as a folder dataset (data=folder)."
    )
    parser.add_argument("out_dir", type=Path, help="a new or empty directory")
    parser.add_argument("--train", type=int, default=384, help="train images (default: 384, as data=scenes)")
    parser.add_argument("--val", type=int, default=128, help="val images (default: 128; 0: no val/ split)")
    parser.add_argument("--test", type=int, default=128, help="test images (default: 128; 0: no test/ split)")
    parser.add_argument(
        "--image-size", type=parse_size, default=(64, 64), help="S or HxW in px (default: 64, as data=scenes; e.g. 384x512)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default: 0, as data.data_seed)")
    args = parser.parse_args(argv)
    if args.train < 1 or args.val < 0 or args.test < 0:
        parser.error("--train must be >= 1, --val and --test >= 0")
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    try:
        export(args.out_dir, sizes, args.image_size, args.seed)
    except (FileExistsError, PermissionError, OSError) as error:
        print(f"segsweep-export-scenes: error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {sum(sizes.values())} scenes ({', '.join(f'{n} {s}' for s, n in sizes.items() if n)}) of "
        f"{args.image_size[0]}x{args.image_size[1]} (HxW) px to {args.out_dir}; train on them with\n"
        f"  python -m segsweep.train data=folder data.root={args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
