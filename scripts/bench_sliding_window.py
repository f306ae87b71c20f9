"""Benchmark segsweep's sliding-window inference against MONAI's on CPU (same model, same tiles).

Usage: python scripts/bench_sliding_window.py [--size 1024] [--roi 64] [--overlap 0.25]
       [--tile-batch 16] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
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


def _timed(fn: Callable[[], Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(size: int, roi: int, overlap: float, tile_batch: int, repeats: int) -> dict:
    """Time ours vs MONAI on one image and compare outputs; warm-up excluded.

    The two run back to back in each repeat, swapping who goes first, and `ratio` is the median of the
    per-repeat ratios, so load from other processes drifting over the run cancels out as far as possible.
    """
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
        "max_abs_diff": (ours_out - monai_out).abs().max().item(),
        "ours_s": statistics.median(ours_times),
        "monai_s": statistics.median(monai_times),
        "ratio": ratio,
        "passed": ratio <= TARGET_RATIO,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.size, args.roi, args.repeats = 128, 32, 3

    r = run(args.size, args.roi, args.overlap, args.tile_batch, args.repeats)
    print(
        f"sliding_window  max_abs_diff={r['max_abs_diff']:.1e}  ours={r['ours_s']:.3f}s  monai={r['monai_s']:.3f}s"
        f"  ratio={r['ratio']:.2f}  target<={TARGET_RATIO:.2f}  {'PASS' if r['passed'] else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
