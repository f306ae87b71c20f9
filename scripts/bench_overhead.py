"""Framework overhead: a segsweep training epoch (Lightning) vs a plain PyTorch loop, same model, data and batch.

Usage: python scripts/bench_overhead.py [--quick] [--smp] [--repeats 5] [--epochs 1] [--threads N] [--profile]

``--smp``: the same comparison on a model-zoo network, smp's Unet on a ResNet-18 encoder at 128 px (``SMP_OVERRIDES``;
with ``--quick``, a tiny timm encoder at 32 px), printed as ``framework_overhead_smp``.

The segsweep side is the real thing: the default config composed by Hydra, the SegmentationModule from
``segsweep.app.build.build_module`` (real torchmetrics, real loss), the real SceneDataModule and a Lightning
Trainer from the config's ``trainer`` node logging to a TensorBoardLogger in a temporary dir (progress bar,
checkpointing, sanity check and validation off). The plain side (``benchlib.plain_fit``) is a bare loop over
the same DataLoader (``datamodule.train_dataloader()``) with the same network, loss, Adam and scheduler. One
repetition fits each side for a warm-up epoch plus ``--epochs`` timed epochs; the sides alternate who goes first;
the ratio is the median over repetitions of (segsweep images/s) / (plain images/s).

Before timing, both sides train ``N`` steps from the same seed and their losses must agree (allclose, rtol 1e-6):
otherwise the script exits with an error, since the comparison would not be of the same computation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger

from benchlib import QUICK_OVERRIDES, line, plain_fit, quiet_lightning, set_threads
from segsweep.app.build import build_module, class_weights
from segsweep.app.compose import compose_config
from segsweep.data.scenes_datamodule import SceneDataModule

TARGET = 0.95
# the model zoo's network (model=smp) of BENCHMARKS.md: 11M encoder parameters, 128 px, 8 batches of 16 an epoch
SMP_OVERRIDES = ("model=smp", "model.arch=Unet", "model.encoder_name=resnet18", "data.image_size=128", "data.train_size=128")
SMP_QUICK_OVERRIDES = (
    *(item for item in QUICK_OVERRIDES if not item.startswith("model.")),  # the U-Net's own keys
    "model=smp",
    "model.arch=Unet",
    "model.encoder_name=tu-mobilenetv3_small_050",
)


class _EpochClock(pl.Callback):
    """Wall time at the end of every training epoch, and (if ``record_losses``) the training loss of every step."""

    def __init__(self, record_losses: bool = False) -> None:
        self.record_losses = record_losses
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.record_losses:
            self.losses.append(outputs["loss"].item())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ends.append(time.perf_counter())


def lightning_fit(
    cfg: DictConfig, datamodule: SceneDataModule, epochs: int, log_dir: str, steps: int | None = None
) -> _EpochClock:
    """Fit the real segsweep module with a Trainer from the config; ``steps`` limits the batches and records losses."""
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, datamodule, class_weights(cfg, datamodule))
    clock = _EpochClock(record_losses=steps is not None)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        min_epochs=None,
        logger=TensorBoardLogger(log_dir, name="", version="", default_hp_metric=False),
        callbacks=[clock],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=steps,
    )
    trainer.fit(module, datamodule=datamodule)
    return clock


def check_equal_losses(cfg: DictConfig, datamodule: SceneDataModule, steps: int, log_dir: str) -> float:
    """Both sides train ``steps`` steps from the same seed; raise unless the losses agree. Returns the max |diff|."""
    ours = lightning_fit(cfg, datamodule, 1, log_dir, steps=steps).losses
    _, plain = plain_fit(cfg, datamodule, 1, steps=steps)
    if len(ours) != steps or len(plain) != steps:
        raise AssertionError(f"expected {steps} losses from each side, got {len(ours)} and {len(plain)}")
    a, b = torch.tensor(ours, dtype=torch.float64), torch.tensor(plain, dtype=torch.float64)
    if not torch.allclose(a, b, rtol=1e-6, atol=1e-7):
        raise AssertionError(
            f"segsweep and plain losses differ over the first {steps} steps:\n  segsweep {ours}\n  plain    {plain}"
        )
    return float((a - b).abs().max())


def run(
    quick: bool = False,
    repeats: int | None = None,
    epochs: int = 1,
    threads: int | None = None,
    overrides: list[str] | None = None,
    check_steps: int | None = None,
    smp: bool = False,
) -> dict[str, Any]:
    """Images/s of both sides (medians), the median ratio and the equal-loss check; see the module docstring."""
    quiet_lightning()
    threads = set_threads(threads)
    repeats = repeats or (2 if quick else 5)
    check_steps = check_steps or (3 if quick else 8)
    defaults = (SMP_QUICK_OVERRIDES if quick else SMP_OVERRIDES) if smp else (QUICK_OVERRIDES if quick else ())
    overrides = list(defaults) + list(overrides or ()) if smp else list(overrides if overrides is not None else defaults)
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cfg = compose_config(overrides, Path(tmp) / "run")
        datamodule: SceneDataModule = instantiate(cfg.data)
        datamodule.setup("fit")
        images_per_epoch = len(datamodule.train_dataloader().dataset)
        max_diff = check_equal_losses(cfg, datamodule, check_steps, str(Path(tmp) / "check"))

        ours_ips, plain_ips = [], []
        for repeat in range(repeats):
            order = ("ours", "plain") if repeat % 2 == 0 else ("plain", "ours")
            for side in order:
                if side == "ours":
                    ends = lightning_fit(cfg, datamodule, 1 + epochs, str(Path(tmp) / f"tb{repeat}")).ends
                    ours_ips.append(epochs * images_per_epoch / (ends[-1] - ends[0]))
                else:
                    ends, _ = plain_fit(cfg, datamodule, 1 + epochs)
                    plain_ips.append(epochs * images_per_epoch / (ends[-1] - ends[0]))
        GlobalHydra.instance().clear()
    ratio = statistics.median(o / p for o, p in zip(ours_ips, plain_ips))
    return {
        "ours_images_per_s": statistics.median(ours_ips),
        "plain_images_per_s": statistics.median(plain_ips),
        "ratio": ratio,
        "ratios": [o / p for o, p in zip(ours_ips, plain_ips)],
        "passed": ratio >= TARGET,
        "equal_losses": True,
        "loss_max_abs_diff": max_diff,
        "check_steps": check_steps,
        "images_per_epoch": images_per_epoch,
        "batch_size": int(cfg.data.batch_size),
        "image_size": int(cfg.data.image_size),
        "epochs": epochs,
        "repeats": repeats,
        "threads": threads,
        "overrides": overrides,
        "model": f"{cfg.model.arch}-{cfg.model.encoder_name}" if smp else None,
    }


def lines(r: dict[str, Any]) -> list[str]:
    model = f"{r['model']} " if r.get("model") else ""
    setup = (
        f"[{model}{r['image_size']}px batch={r['batch_size']} {r['images_per_epoch']} img/epoch, {r['epochs']} timed epoch(s) x "
        f"{r['repeats']} repeats, threads={r['threads']}; "
        f"first {r['check_steps']} losses equal, max|diff|={r['loss_max_abs_diff']:.1e}]"
    )
    text = line(
        "framework_overhead_smp" if model else "framework_overhead",
        f"segsweep={r['ours_images_per_s']:.1f}img/s",
        f"plain={r['plain_images_per_s']:.1f}img/s",
        r["ratio"],
        ">=",
        TARGET,
    )
    return [f"{text}  {setup}"]


def profile(quick: bool, threads: int | None) -> None:
    """cProfile of one segsweep epoch after a warm-up epoch: where the Python-side time goes."""
    import cProfile
    import pstats

    set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cfg = compose_config(list(QUICK_OVERRIDES if quick else ()), Path(tmp) / "run")
        datamodule: SceneDataModule = instantiate(cfg.data)
        datamodule.setup("fit")
        profiler = cProfile.Profile()
        profiler.enable()
        lightning_fit(cfg, datamodule, 2, tmp)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="debug=fast sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per fit (after one warm-up epoch)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of segsweep epochs instead")
    parser.add_argument("--smp", action="store_true", help="smp's Unet on a ResNet-18 encoder at 128 px (model=smp)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the composed config")
    args = parser.parse_args()
    if args.profile:
        profile(args.quick, args.threads)
        return 0
    overrides = args.overrides or None
    for text in lines(run(args.quick, args.repeats, args.epochs, args.threads, overrides, smp=args.smp)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
