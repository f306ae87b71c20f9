"""GPU time on paper of the loss study on each public dataset (conf/experiment/loss_comparison_<dataset>.yaml), on an H200.

Usage: python scripts/gpu_time_on_paper.py [--mfu 0.4] [--count-size 128]

For each experiment: composes it (``data.root`` is a placeholder: nothing is read), builds its model with the
dataset's class count, and counts one training image's FLOPs (forward + backward) and one forward pass with
``torch.utils.flop_counter.FlopCounterMode`` on the CPU, at ``--count-size`` px and scaled by pixels to the experiment's
crop (the U-Net's convolutions cost the same per pixel at any size). A job trains ``max_epochs`` x ceil(train images /
batch) steps and segments the val split each epoch, and the test split once, by sliding windows of crops (overlap
0.25, as the module does); the sweep runs every job. The total divides by an H200's dense bf16 rate (989 TFLOP/s,
NVIDIA's spec) times an ASSUMED model FLOP utilisation (``--mfu``, 0.4 by default: a guess for a small U-Net in
bf16-mixed, not a measurement). The split sizes are the datasets' published ones (DATASETS below).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from segsweep.app.compose import compose_config
from segsweep.inference import tile_starts

H200_BF16_FLOPS = 989e12
OVERLAP = 0.25


@dataclass(frozen=True)
class Dataset:
    """The published size of a dataset's splits: images and their (height, width)."""

    classes: int
    train: int
    val: int
    test: int
    size: tuple[int, int]
    source: str


DATASETS = {
    "cityscapes": Dataset(19, 2975, 500, 500, (1024, 2048), "gtFine train/val; the test stage uses val"),
    "ade20k": Dataset(150, 20210, 2000, 2000, (512, 683), "SceneParsing; images about 512 px short side"),
    "voc": Dataset(21, 1464, 1449, 1449, (375, 500), "VOC2012 train/val (no SBD); the test stage uses val"),
    "camvid": Dataset(11, 367, 101, 233, (360, 480), "SegNet's release"),
    # nnU-Net's 2D example (Massachusetts Roads: 1108 training images of 1500x1500); folds=5: 4/5 train, 1/5 val+test
    "nnunet": Dataset(2, 886, 222, 222, (1500, 1500), "Dataset120_RoadSegmentation, fold 0 of 5"),
}


def image_flops(model: torch.nn.Module, size: int, train: bool) -> int:
    """FLOPs of one ``size`` x ``size`` image: forward + backward when ``train``, else one forward pass."""
    model.train(train)
    images = torch.rand(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(images).sum().backward()
        else:
            with torch.no_grad():
                model(images)
    return counter.get_total_flops()


def sweep_jobs() -> int:
    """Jobs of the composed config's sweep: the product of its swept values' counts."""
    params = HydraConfig.get().sweeper.params or {}
    return math.prod(len(str(values).split(",")) for values in params.values())


def tiles(size: tuple[int, int], crop: int) -> int:
    return len(tile_starts(size[0], crop, OVERLAP)) * len(tile_starts(size[1], crop, OVERLAP))


def estimate(name: str, mfu: float, count_size: int) -> dict:
    """One experiment's FLOPs and hours on paper."""
    data = DATASETS[name]
    overrides = [f"experiment=loss_comparison_{name}", "data.root=/not/read", f"model.num_classes={data.classes}"]
    cfg = compose_config(overrides, "/tmp/gpu_time_on_paper")
    jobs = sweep_jobs()
    GlobalHydra.instance().clear()
    model = instantiate(cfg.model)
    crop, batch, epochs = cfg.data.crop_size, cfg.data.batch_size, cfg.trainer.max_epochs
    scale = (crop / count_size) ** 2
    train_image = image_flops(model, count_size, train=True) * scale
    tile = image_flops(model, count_size, train=False) * scale
    steps = epochs * math.ceil(data.train / batch)
    evals = (epochs * data.val + data.test) * tiles(data.size, crop) * tile
    job = steps * batch * train_image + evals
    seconds = jobs * job / (H200_BF16_FLOPS * mfu)
    return {
        "name": name,
        "crop": crop,
        "batch": batch,
        "epochs": epochs,
        "steps": steps,
        "step_tflop": batch * train_image / 1e12,
        "jobs": jobs,
        "job_pflop": job / 1e15,
        "hours": seconds / 3600,
        "images_per_s": steps * batch * jobs / seconds,
    }


def table(rows: list[dict], mfu: float, count_size: int) -> str:
    head = [
        f"H200 dense bf16 {H200_BF16_FLOPS / 1e12:.0f} TFLOP/s x assumed MFU {mfu:g}; FLOPs counted at {count_size} px, "
        "scaled by pixels",
        "| experiment | crop x batch | epochs (steps) | TFLOP/step | jobs | PFLOP/job (incl. val) | H200 hours, all jobs "
        "| train img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    body = [
        f"| loss_comparison_{r['name']} | {r['crop']}x{r['crop']} x {r['batch']} | {r['epochs']} ({r['steps']}) | "
        f"{r['step_tflop']:.2f} | {r['jobs']} | {r['job_pflop']:.0f} | {r['hours']:.1f} | {r['images_per_s']:.0f} |"
        for r in rows
    ]
    return "\n".join(head + body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation (default 0.4)")
    parser.add_argument("--count-size", type=int, default=128, help="image size FLOPs are counted at (default 128)")
    args = parser.parse_args()
    rows = [estimate(name, args.mfu, args.count_size) for name in DATASETS]
    print(table(rows, args.mfu, args.count_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
