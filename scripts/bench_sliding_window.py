"""Sliding window: segsweep's sliding-window inference vs MONAI's on the CPU (same model, same tiles, gaussian mode).

Usage: python scripts/bench_sliding_window.py [--size 1024] [--roi 64] [--overlap 0.25]
       [--tile-batch 16] [--repeats 5] [--threads N] [--quick]

The bar: outputs equal within 1e-4 and time ratio (ours / MONAI) <= 1. ``run`` needs nothing but torch, MONAI and
segsweep (tests load this file by path, alone); ``lines`` formats the result with ``benchlib``.

A second line (INFO, no bar) is predict's memory: the peak RSS added by segmenting one uint8 image of 4 x ``size``
px a side into class indices, the bounded path (``sliding_window_argmax``: uint8 in, per-tile floats, one stripe of
logits) over the full one (float image, whole-image logits and weights, then argmax), each in its own process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference as monai_sliding_window_inference
from torch import Tensor, nn

from segsweep.inference import sliding_window_inference

IN_CHANNELS = 3
NUM_CLASSES = 8
TARGET_RATIO = 1.0
TOLERANCE = 1e-4

# One path on one image in a fresh process: a 1x1 conv, since memory, not compute, is measured. Prints the peak
# RSS above the RSS before the call (image and model already there), in bytes; Linux only (/proc).
_MEMORY_CHILD = """
import json, sys, torch
from segsweep.inference import sliding_window_argmax, sliding_window_inference
path, size, roi, tile_batch, classes = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(1)
model = torch.nn.Conv2d(3, classes, 1).eval()
image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))
def segment(image):
    with torch.inference_mode():
        if path == "bounded":
            return sliding_window_argmax(image, lambda t: model(t.float() / 255), roi, tile_batch=tile_batch)
        return sliding_window_inference(image.float() / 255, model, roi, tile_batch=tile_batch).argmax(1)
segment(image[..., : 2 * roi, : 2 * roi])  # warm-up: torch's lazily loaded kernels are not the path's memory
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")  # reset the peak (VmHWM) to the current RSS: importing torch peaks higher than the call may
before = status("VmRSS")
segment(image)
print(json.dumps({"peak": status("VmHWM") - before}))
"""


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """Two-level U-Net-like conv net, enough compute per tile to make the benchmark realistic."""

    def __init__(self, in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES, width: int = 16) -> None:
        super().__init__()
        self.enc = _block(in_channels, width)
        self.mid = _block(width, 2 * width)
        self.dec = _block(3 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.enc(x)
        deep = nn.functional.interpolate(self.mid(nn.functional.max_pool2d(skip, 2)), scale_factor=2.0)
        return self.head(self.dec(torch.cat([skip, deep], dim=1)))


def peak_memory(size: int, roi: int, tile_batch: int) -> dict:
    """Peak RSS (bytes) added by predict's bounded path and by the full-logits path on one size x size image."""
    peaks = {}
    for path in ("bounded", "full"):
        args = [sys.executable, "-c", _MEMORY_CHILD, path, str(size), str(roi), str(tile_batch), str(NUM_CLASSES)]
        child = subprocess.run(args, capture_output=True, text=True, check=True)
        peaks[path] = json.loads(child.stdout.strip().splitlines()[-1])["peak"]
    return {"size": size, **peaks, "ratio": peaks["bounded"] / max(peaks["full"], 1)}


def _timed(fn: Callable[[], Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    size: int | None = None,
    roi: int | None = None,
    overlap: float = 0.25,
    tile_batch: int = 16,
    repeats: int | None = None,
    quick: bool = False,
    threads: int | None = None,
) -> dict:
    """Time ours vs MONAI on one image and compare outputs; warm-up excluded.

    The two run back to back in each repeat, swapping who goes first, and `ratio` is the median of the
    per-repeat ratios, so load from other processes drifting over the run cancels out as far as possible.
    Defaults: 1024 px, roi 64, 5 repeats (``quick``: 128 px, roi 32, 3 repeats).
    """
    size = size or (128 if quick else 1024)
    roi = roi or (32 if quick else 64)
    repeats = repeats or (3 if quick else 5)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TinyUNet().eval()
    image = torch.randn(1, IN_CHANNELS, size, size)

    def ours() -> Tensor:
        return sliding_window_inference(image, model, roi, overlap=overlap, mode="gaussian", tile_batch=tile_batch)

    def monai() -> Tensor:
        return monai_sliding_window_inference(image, roi, tile_batch, model, overlap=overlap, mode="gaussian", sigma_scale=0.125)

    ours_times, monai_times = [], []
    with torch.no_grad():
        ours_out, monai_out = ours(), monai()  # warm-up, also the outputs compared below
        for i in range(repeats):
            if i % 2:
                monai_times.append(_timed(monai))
                ours_times.append(_timed(ours))
            else:
                ours_times.append(_timed(ours))
                monai_times.append(_timed(monai))
    ratio = statistics.median(o / m for o, m in zip(ours_times, monai_times))
    return {
        "memory": peak_memory(4 * size, roi, tile_batch),
        "max_abs_diff": (ours_out - monai_out).abs().max().item(),
        "ours_s": statistics.median(ours_times),
        "monai_s": statistics.median(monai_times),
        "ratio": ratio,
        "passed": ratio <= TARGET_RATIO and (ours_out - monai_out).abs().max().item() <= TOLERANCE,
        "size": size,
        "roi": roi,
        "overlap": overlap,
        "tile_batch": tile_batch,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }


def lines(r: dict) -> list[str]:
    from benchlib import line  # here, not at the top: run() is also loaded alone (see the module docstring)

    text = line(
        "sliding_window",
        f"ours={r['ours_s']:.3f}s(max|diff|={r['max_abs_diff']:.1e})",
        f"monai={r['monai_s']:.3f}s",
        r["ratio"],
        "<=",
        TARGET_RATIO,
    )
    if r["max_abs_diff"] > TOLERANCE:  # the bar is output within 1e-4 *and* time ratio <= 1
        text = text.rsplit("  ", 1)[0] + f"  MISS(output differs from MONAI by more than {TOLERANCE:g})"
    setup = f"[{r['size']}px roi={r['roi']} overlap={r['overlap']} tile_batch={r['tile_batch']} repeats={r['repeats']}]"
    memory = r["memory"]
    peaks = line(
        "sliding_window_memory",
        f"bounded={memory['bounded'] / 2**20:.0f}MB",
        f"full={memory['full'] / 2**20:.0f}MB",
        memory["ratio"],
        None,
        None,
    )
    return [
        f"{text}  {setup}",
        f"{peaks}  [{memory['size']}px {NUM_CLASSES} classes, peak RSS added, predict's path / full logits]",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 1024)")
    parser.add_argument("--roi", type=int, default=None, help="tile side in pixels (default 64)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None, help="default 5")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = parser.parse_args()
    r = run(args.size, args.roi, args.overlap, args.tile_batch, args.repeats, args.quick, args.threads)
    for text in lines(r):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
