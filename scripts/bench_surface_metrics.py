"""Cost of module.surface_metrics: HD95 and NSD of every class per test image, at 128 and 512 px, beside MONAI's.

Usage: python scripts/bench_surface_metrics.py [--quick] [--threads N]

The masks are generated scenes (truth) and the same scenes with their objects moved by a few pixels (prediction), so
every class has a real surface. ``ours`` is segsweep.models.surface_metrics.image_surface_metrics (scipy's exact
Euclidean distance transform, cropped to the masks' box), ``monai`` is compute_hausdorff_distance(percentile=95)
plus compute_surface_dice on the same image: the two ratios together are what one test image costs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchlib import alternate, line, quick_main, set_threads
from segsweep.data.scenes import SceneSpec, generate_scenes
from segsweep.models.surface_metrics import image_surface_metrics

TOLERANCE = 2.0


def masks(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth [count, size, size] from the generator and a prediction: the truth shifted by size/64 pixels (at least 1)."""
    _, truth = generate_scenes(SceneSpec(), seed=0, split="test", indices=torch.arange(count), height=size)
    shift = max(1, size // 64)
    prediction = torch.roll(truth, shifts=(shift, -shift), dims=(1, 2))
    return prediction.long().numpy(), truth.long().numpy()


def each_image(metrics: Callable[..., Any], prediction: np.ndarray, truth: np.ndarray, classes: int, tolerance: float) -> None:
    for pred, true in zip(prediction, truth):
        metrics(pred, true, classes, tolerance)


def monai_metrics(prediction: np.ndarray, truth: np.ndarray, num_classes: int, tolerance: float) -> None:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, true = (F.one_hot(torch.as_tensor(m), num_classes).permute(2, 0, 1)[None].float() for m in (prediction, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_hausdorff_distance(pred, true, include_background=True, percentile=95)
        compute_surface_dice(pred, true, [tolerance] * num_classes, include_background=True)


def run(quick: bool = False, threads: int | None = None, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    threads = set_threads(threads)
    sizes = sizes or ((32,) if quick else (128, 512))
    count, repeats = (2, 2) if quick else (8, 3)
    result: dict[str, Any] = {"threads": threads, "sizes": {}}
    for size in sizes:
        prediction, truth = masks(size, count)
        classes = int(max(prediction.max(), truth.max())) + 1

        ours = partial(each_image, image_surface_metrics, prediction, truth, classes, TOLERANCE)
        monai = partial(each_image, monai_metrics, prediction, truth, classes, TOLERANCE)
        times = alternate({"ours": ours, "monai": monai}, repeats)
        ms = {name: 1000 * float(np.median(values)) / count for name, values in times.items()}
        result["sizes"][size] = {"ours_ms": ms["ours"], "monai_ms": ms["monai"], "classes": classes, "images": count}
    return result


def lines(r: dict[str, Any]) -> list[str]:
    return [
        line(
            f"surface_metrics_{size}px",
            f"ours={s['ours_ms']:.3g}ms/image",
            f"monai={s['monai_ms']:.3g}ms/image",
            s["ours_ms"] / s["monai_ms"],
            None,
            None,
        )
        + f"  [{s['classes']} classes, {s['images']} images, torch threads={r['threads']}]"
        for size, s in r["sizes"].items()
    ]


if __name__ == "__main__":
    raise SystemExit(quick_main(__doc__, run, lines))
