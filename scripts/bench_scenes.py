"""Scene generation: segsweep's batched generator vs a per-image NumPy generator in the seed notebook's style.

Usage: python scripts/bench_scenes.py [--quick] [--size 128] [--repeats 7] [--threads N] [--baseline FILE] [--no-share]

The reference (``notebook_style_scene`` below) draws the same kind of scene the way the notebook's
``create_segmentation_scene`` does: one image at a time, NumPy slice writes, ``np.random``: a random horizon,
a sky gradient, a road shade, 1-3 cars of random size, position and colour drawn far to near, 0-3 pedestrians,
Gaussian noise, clip, uint8. segsweep's side is ``segsweep.data.scenes.generate_scenes`` on batches of 512. The two
alternate over the repetitions; the ratio is the median of the per-repetition images/s ratios (target >= 20x).

Second line: generating every split of the default config (what ``SceneDataModule.setup`` does once per run)
as a share of one training epoch of the default config (a plain loop with its model, loss and Adam; a lower
bound of a Lightning epoch, so the share is if anything overstated). Target: at most 5% of one epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from benchlib import QUICK_OVERRIDES, alternate, line, plain_fit, set_threads
from segsweep.app.compose import compose_config
from segsweep.data.scenes import SceneSpec, generate_scenes

TARGET_SPEEDUP = 20.0
TARGET_SHARE = 0.05
BATCH = 512


def notebook_style_scene(size: int = 128, rng: Any = np.random) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene, the way the seed notebook draws its fixed one."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.int64)

    # Sky: class 0, blue with a red gradient down to a random horizon
    horizon = int(size * rng.uniform(0.35, 0.55))
    img[:horizon, :, 2] = 180
    img[:horizon, :, 0] = np.linspace(100, 150, horizon)[:, np.newaxis]
    # Road: class 1, a random grey
    img[horizon:, :, :] = rng.randint(70, 131)
    mask[horizon:, :] = 1

    # 1-3 cars and 0-3 pedestrians at random depths, drawn far (near the horizon) to near
    objects = [(2, rng.uniform(0.08, 1.0)) for _ in range(rng.randint(1, 4))]
    objects += [(3, rng.uniform(0.08, 1.0)) for _ in range(3) if rng.uniform() < 0.5]
    objects.sort(key=lambda item: item[1])
    for cls, depth in objects:
        bottom = int(horizon + depth * (size - horizon))
        scale = 0.2 + 0.8 * depth
        if cls == 2:  # car: red body, narrower cabin on top
            width = int(rng.uniform(0.3, 0.5) * size * scale)
            body, cabin = int(0.35 * width), int(0.24 * width)
            color = np.array([180, 50, 50]) + rng.randint(-30, 31, 3)
        else:  # pedestrian: green body and head
            height = int(rng.uniform(0.3, 0.45) * size * scale)
            width, body, cabin = int(0.38 * height), int(0.8 * height), int(0.2 * height)
            color = np.array([50, 170, 50]) + rng.randint(-30, 31, 3)
        left = rng.randint(-width // 2, size - width // 2)
        inset = int(0.2 * width)
        top = max(bottom - body, 0)
        img[top:bottom, max(left, 0) : left + width, :] = color
        mask[top:bottom, max(left, 0) : left + width] = cls
        top_of_cabin = max(top - cabin, 0)
        img[top_of_cabin:top, max(left + inset, 0) : left + width - inset, :] = color
        mask[top_of_cabin:top, max(left + inset, 0) : left + width - inset] = cls

    # Add noise
    img = np.clip(img.astype(np.float32) + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    return img, mask


def _reference(count: int, size: int) -> None:
    for _ in range(count):
        notebook_style_scene(size)


def _segsweep(count: int, size: int, spec: Any, generate: Any = generate_scenes) -> None:
    for start in range(0, count, BATCH):
        generate(spec, 0, "train", torch.arange(start, min(start + BATCH, count)), size)


def load_generator(path: str | Path) -> Any:
    """Another version of the scene generator as a module (``--baseline``), e.g. from
    ``git show REV:src/segsweep/data/scenes.py`` (``src/segsweep/scenes.py`` before the package was split)."""
    spec = importlib.util.spec_from_file_location("baseline_scenes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_scenes"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def speedup(size: int, repeats: int, reference_images: int, segsweep_images: int, baseline: Any = None) -> dict[str, Any]:
    """Images/s of the generators, alternated (the order reverses every repetition); the median per-repetition ratio."""
    np.random.seed(0)
    sides = {
        "ours": lambda: _segsweep(segsweep_images, size, SceneSpec()),
        "reference": lambda: _reference(reference_images, size),
    }
    counts = {"ours": segsweep_images, "reference": reference_images}
    if baseline is not None:
        sides["baseline"] = lambda: _segsweep(segsweep_images, size, baseline.SceneSpec(), baseline.generate_scenes)
        counts["baseline"] = segsweep_images
    _reference(3, size)  # warm-up: imports, noise bank, allocator
    for name in sides:
        if name != "reference":
            _segsweep(
                min(segsweep_images, BATCH),
                size,
                SceneSpec(),
                baseline.generate_scenes if name == "baseline" else generate_scenes,
            )
    times = alternate(sides, repeats)
    rates = {name: [counts[name] / t for t in times[name]] for name in sides}
    ratio = statistics.median(o / r for o, r in zip(rates["ours"], rates["reference"]))
    result = {
        "ours_images_per_s": statistics.median(rates["ours"]),
        "reference_images_per_s": statistics.median(rates["reference"]),
        "ratio": ratio,
        "ratios": [o / r for o, r in zip(rates["ours"], rates["reference"])],
        "passed": ratio >= TARGET_SPEEDUP,
        "size": size,
        "repeats": repeats,
    }
    if baseline is not None:
        result["baseline_images_per_s"] = statistics.median(rates["baseline"])
        result["baseline_ratio"] = statistics.median(b / r for b, r in zip(rates["baseline"], rates["reference"]))
        result["ours_vs_baseline"] = statistics.median(o / b for o, b in zip(rates["ours"], rates["baseline"]))
    return result


def epoch_share(quick: bool, repeats: int) -> dict[str, Any]:
    """Generating all splits of the default config vs one training epoch of it (plain loop), alternated."""
    with tempfile.TemporaryDirectory(prefix="bench_scenes_") as tmp:
        cfg = compose_config(list(QUICK_OVERRIDES) if quick else [], Path(tmp) / "run")
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        generate, epoch = [], []
        for repeat in range(repeats):
            for side in ("generate", "epoch") if repeat % 2 == 0 else ("epoch", "generate"):
                if side == "generate":
                    start = time.perf_counter()
                    instantiate(cfg.data).setup("fit")  # a fresh datamodule generates train, val and test
                    generate.append(time.perf_counter() - start)
                else:
                    ends, _ = plain_fit(cfg, datamodule, 2)  # warm-up epoch, timed epoch
                    epoch.append(ends[1] - ends[0])
        GlobalHydra.instance().clear()
    share = statistics.median(g / e for g, e in zip(generate, epoch))
    splits = {split: int(cfg.data[f"{split}_size"]) for split in ("train", "val", "test")}
    return {
        "generate_s": statistics.median(generate),
        "epoch_s": statistics.median(epoch),
        "share": share,
        "passed": share <= TARGET_SHARE,
        "splits": splits,
        "image_size": int(cfg.data.image_size),
    }


def run(
    quick: bool = False,
    repeats: int | None = None,
    size: int | None = None,
    threads: int | None = None,
    baseline: str | Path | None = None,
    share: bool = True,
) -> dict[str, Any]:
    threads = set_threads(threads)
    repeats = repeats or (3 if quick else 7)
    size = size or (32 if quick else 128)
    reference_images, segsweep_images = (20, 256) if quick else (300, 4 * BATCH)
    result = speedup(size, repeats, reference_images, segsweep_images, load_generator(baseline) if baseline else None)
    if share:
        result["share"] = epoch_share(quick, 2 if quick else 3)
    result["threads"] = threads
    return result


def lines(r: dict[str, Any]) -> list[str]:
    out = [
        line(
            "scene_generation",
            f"segsweep={r['ours_images_per_s']:.0f}img/s",
            f"numpy_per_image={r['reference_images_per_s']:.0f}img/s",
            r["ratio"],
            ">=",
            TARGET_SPEEDUP,
        )
        + f"  [{r['size']}px, {r['repeats']} repeats, torch threads={r['threads']}]"
    ]
    if "baseline_images_per_s" in r:
        out.append(
            line(
                "scene_generation_baseline",
                f"baseline={r['baseline_images_per_s']:.0f}img/s",
                f"numpy_per_image={r['reference_images_per_s']:.0f}img/s",
                r["baseline_ratio"],
                ">=",
                TARGET_SPEEDUP,
            )
            + f"  [--baseline generator, same run; segsweep/baseline = {r['ours_vs_baseline']:.2f}x]"
        )
    if "share" in r:
        share = r["share"]
        splits = "+".join(str(n) for n in share["splits"].values())
        out.append(
            line(
                "scene_generation_share",
                f"generate_all_splits={share['generate_s'] * 1e3:.1f}ms",
                f"one_epoch={share['epoch_s']:.2f}s",
                share["share"],
                "<=",
                TARGET_SHARE,
            )
            + f"  [{splits} scenes at {share['image_size']}px, generated once per run; share of ONE epoch]"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 128)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--baseline", help="another scenes.py to time alongside (before/after), e.g. an older revision")
    parser.add_argument("--no-share", dest="share", action="store_false", help="skip the share-of-an-epoch line")
    args = parser.parse_args()
    for text in lines(run(args.quick, args.repeats, args.size, args.threads, args.baseline, args.share)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
