"""What keeping the truth's distance maps saves: loss=boundary's and HD-DT's forward and backward per batch, warm vs cold.

Usage: python scripts/bench_distance_maps.py [--quick] [--threads N]

A batch of generated scenes (the GPU studies' 32 images at 128 px; ``--quick``: 4 at 32 px) through each loss with
its cache already holding the batch's masks (``warm``: every epoch after the first) and with a new, empty cache
(``cold``: the first epoch, and every batch without a cache). The two alternate in one process; the ratio is
warm over cold. HD-DT computes the prediction's distances every step whatever the cache, so it saves less.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from benchlib import alternate, line, quick_main, set_threads
from segsweep.data.scenes import SceneSpec, generate_scenes
from segsweep.models.losses import BoundaryLoss, HausdorffDTLoss

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "boundary": lambda: BoundaryLoss({"_target_": "segsweep.models.losses.dice.GeneralizedDiceLoss"}),
    "hausdorff": HausdorffDTLoss,
}


def step(loss: nn.Module, logits: torch.Tensor, masks: torch.Tensor) -> None:
    logits = logits.detach().requires_grad_(True)
    loss(logits, masks).backward()


def run(quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    threads = set_threads(threads)
    size, count, repeats = (32, 4, 2) if quick else (128, 32, 5)
    _, masks = generate_scenes(SceneSpec(), seed=0, split="train", indices=torch.arange(count), height=size)
    masks = masks.long()
    classes = int(masks.max()) + 1
    logits = torch.randn(count, classes, size, size, generator=torch.Generator().manual_seed(0))
    result: dict[str, Any] = {"threads": threads, "size": size, "images": count, "losses": {}}
    for name, make in LOSSES.items():
        warm = make()
        step(warm, logits, masks)  # fills its cache
        contenders = {"warm": partial(step, warm, logits, masks), "cold": lambda make=make: step(make(), logits, masks)}
        times = alternate(contenders, repeats)
        result["losses"][name] = {kind: 1000 * float(np.median(values)) for kind, values in times.items()}
    return result


def lines(r: dict[str, Any]) -> list[str]:
    return [
        line(
            f"distance_maps_{name}_{r['size']}px",
            f"warm={ms['warm']:.3g}ms/batch",
            f"cold={ms['cold']:.3g}ms/batch",
            ms["warm"] / ms["cold"],
            None,
            None,
        )
        + f"  [{r['images']} images a batch, loss forward + backward, torch threads={r['threads']}]"
        for name, ms in r["losses"].items()
    ]


if __name__ == "__main__":
    raise SystemExit(quick_main(__doc__, run, lines))
