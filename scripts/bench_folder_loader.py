"""Data loading: segsweep's folder loader vs a plain PIL + transforms.v2 DataLoader on 2048x1024 PNGs (Cityscapes' size).

Usage: python scripts/bench_folder_loader.py [--quick] [--images N] [--workers W] [--repeats R] [--rss-workers M]

Both loaders read the same folder (RGB PNG images, L masks, written into a temporary dir), take the same random
crops (``--crop``) with horizontal flips, and batch them with the same DataLoader settings (W workers, batch 4);
each pass reads every image once, the two alternating who goes first. The bar: segsweep's images/s per worker >= the
plain loader's. An INFO line compares the PNG decoders alone in this process: ``torchvision.io.decode_png`` against
PIL (what both loaders use). A second INFO line gives each loader's peak RSS with M workers (8; 2 with --quick): the
largest sum, over the batches of one pass, of the VmRSS of this process and of each of its DataLoader workers
(/proc/<pid>/status, Linux; pages the forked workers share with this process count once per process, as top shows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import decode_png, read_file
from torchvision.transforms import v2

from benchlib import alternate, line
from segsweep.data.folder import FolderDataModule

BATCH = 4


def write_folder(root: Path, images: int, height: int, width: int) -> None:
    """``images`` pairs of smooth colour fields with noise (PNG compresses them as it does photos: poorly)."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.yaml").write_text("names: [sky, road, car]\n")
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    for index in range(images):
        noise = rng.integers(0, 48, (height, width, 3), dtype=np.uint8)
        pixels = np.clip(rows * np.array([0.4, 0.7, 1.0]) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "train" / "images" / f"{index:04d}.png")
        mask = np.zeros((height, width), np.uint8)
        mask[height // 2 :] = 1
        mask[height // 2 : height // 2 + height // 8, width // 4 : width // 2] = 2
        Image.fromarray(mask, mode="L").save(root / "train" / "masks" / f"{index:04d}.png")


class PlainDataset(Dataset):
    """What one writes by hand: PIL opens, transforms.v2 crops and flips, float images and long masks out."""

    def __init__(self, root: Path, crop: int) -> None:
        self.images = sorted((root / "train" / "images").glob("*.png"))
        self.transform = v2.Compose(
            [v2.RandomCrop(crop, pad_if_needed=True), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.images[index]
        with Image.open(path) as opened:
            image = tv_tensors.Image(torch.from_numpy(np.array(opened.convert("RGB"))).permute(2, 0, 1))
        with Image.open(path.parent.parent / "masks" / path.name) as opened:
            mask = tv_tensors.Mask(torch.from_numpy(np.array(opened)).long())
        image, mask = self.transform(image, mask)
        return image, mask


def _drain(loader: DataLoader) -> None:
    for _ in loader:
        pass


def _vmrss(pid: int) -> int:
    """Resident bytes of process ``pid`` now (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    kib = next(field.split()[1] for field in status.splitlines() if field.startswith("VmRSS:"))
    return int(kib) * 1024


def peak_rss(loader: DataLoader) -> int:
    """One pass over ``loader``: the largest sum of this process's and its workers' RSS seen at a batch."""
    iterator = iter(loader)
    pids = [os.getpid()] + [worker.pid for worker in getattr(iterator, "_workers", [])]
    peak = 0
    for _ in iterator:
        peak = max(peak, sum(_vmrss(pid) for pid in pids))
    return peak


def run(
    quick: bool = False,
    threads: int | None = None,
    images: int = 32,
    workers: int = 2,
    repeats: int = 3,
    crop: int = 512,
    rss_workers: int = 8,
) -> dict:
    """Both loaders' images/s per worker and peak RSS with ``rss_workers`` (``threads`` is bench.py's option: the
    loaders' work is in their workers)."""
    height, width = (256, 512) if quick else (1024, 2048)
    images, repeats, crop, rss_workers = (8, 2, 128, 2) if quick else (images, repeats, crop, rss_workers)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = Path(tmp) / "folder"
        write_folder(root, images, height, width)
        cache = str(Path(tmp) / "cache")
        datamodule = FolderDataModule(str(root), crop_size=crop, batch_size=BATCH, num_workers=workers, cache_dir=cache)
        datamodule.setup("fit")
        ours = datamodule.train_dataloader()
        plain = DataLoader(PlainDataset(root, crop), batch_size=BATCH, shuffle=True, num_workers=workers)
        count = {"segsweep": len(ours.dataset), "plain": len(plain.dataset)}
        times = alternate({"segsweep": lambda: _drain(ours), "plain": lambda: _drain(plain)}, repeats)
        files = sorted((root / "train" / "images").glob("*.png"))[:4]
        decoders = alternate(
            {
                "pil": lambda: [np.asarray(Image.open(path).convert("RGB")) for path in files],
                "decode_png": lambda: [decode_png(read_file(str(path))) for path in files],
            },
            repeats,
        )
        wide = FolderDataModule(str(root), crop_size=crop, batch_size=BATCH, num_workers=rss_workers, cache_dir=cache)
        wide.setup("fit")
        plain_wide = DataLoader(PlainDataset(root, crop), batch_size=BATCH, shuffle=True, num_workers=rss_workers)
        rss = {"segsweep": peak_rss(wide.train_dataloader()), "plain": peak_rss(plain_wide)}
    per_worker = {name: count[name] / statistics.median(values) / max(workers, 1) for name, values in times.items()}
    return {
        "size": (height, width),
        "images": count,
        "workers": workers,
        "crop": crop,
        "per_worker": per_worker,
        "ratio": per_worker["segsweep"] / per_worker["plain"],
        "decode_ratio": statistics.median(decoders["pil"]) / statistics.median(decoders["decode_png"]),
        "rss_workers": rss_workers,
        "peak_rss_bytes": rss,
        "quick": quick,
    }


def lines(r: dict[str, Any]) -> list[str]:
    height, width = r["size"]
    ours, plain, rss = r["per_worker"]["segsweep"], r["per_worker"]["plain"], r["peak_rss_bytes"]
    what = f"{width}x{height} PNG, {r['workers']} workers, batch {BATCH}, crops of {r['crop']} with flips"
    return [
        line("folder_loader", f"segsweep={ours:.2f}img/s/worker", f"plain={plain:.2f}img/s/worker", r["ratio"], ">=", 1.0)
        + f"  [{what}; plain: PIL + transforms.v2 RandomCrop/RandomHorizontalFlip]",
        line("png_decode", "decode_png", "pil", r["decode_ratio"], None, None)
        + f"  [PIL's decode time / torchvision.io.decode_png's, {width}x{height} RGB PNG, one process]",
        line(
            "folder_loader_rss",
            f"segsweep={rss['segsweep'] / 2**20:.0f}MiB",
            f"plain={rss['plain'] / 2**20:.0f}MiB",
            rss["segsweep"] / rss["plain"],
            None,
            None,
        )
        + f"  [peak RSS of this process + its {r['rss_workers']} workers over a pass, {width}x{height} PNG, batch {BATCH}]",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 images of 512x256 (a smoke test, not the bar)")
    parser.add_argument("--images", type=int, default=32, help="images in the folder (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both loaders (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the folder per loader (default 3)")
    parser.add_argument("--rss-workers", type=int, default=8, help="workers of the peak RSS pass (default 8)")
    args = parser.parse_args()
    for text in lines(run(args.quick, None, args.images, args.workers, args.repeats, rss_workers=args.rss_workers)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
