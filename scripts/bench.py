"""Run every segsweep benchmark and print one line per bar (``make bench``).

Usage: python scripts/bench.py [--quick] [--sweep] [--only NAME ...] [--threads N]

Threads: by default every benchmark runs torch on ONE intra-op thread (the scene generator always does). The
two cores here are shared; with two OpenMP threads, a busy neighbour process makes every parallel region wait
for a descheduled thread, and a default training epoch took 32-38 s instead of 6 s (measured side by side):
the figures then measure the neighbours, not the code. ``--threads 0`` uses torch's default (one per core),
for a quiet machine.

Each line reads ``<bar>  <figure>  <reference>  ratio=<r>  target <op> <t>  PASS|MISS`` (``INFO`` for figures
without a bar). Every ratio is measured side by side in one process: the two contenders alternate over several
repetitions and the ratio is the median of the per-repetition ratios, so load from other processes (the cores
are shared) hits both alike. The exit code is 0 even when a bar is missed (a MISS is a finding); it is 1 only
when a benchmark crashes or a correctness check inside one fails.

The helpers below are shared by the bench_*.py scripts beside this file.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
# torch's own default (one thread per core), read before any script changes it
DEFAULT_THREADS = __import__("torch").get_num_threads()
REPO_ROOT = SCRIPTS.parent
# --quick: a few tiny batches of a tiny U-Net (debug=fast plus explicit sizes, whatever debug=fast holds)
QUICK_OVERRIDES = (
    "debug=fast",
    "data.image_size=32",
    "data.train_size=64",
    "data.batch_size=8",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.limit_train_batches=null",
)
_OPS = {">=": lambda r, t: r >= t, "<=": lambda r, t: r <= t, "<": lambda r, t: r < t, ">": lambda r, t: r > t}


def verdict(ratio: float, op: str, target: float) -> str:
    return "PASS" if math.isfinite(ratio) and _OPS[op](ratio, target) else "MISS"


def line(bar: str, figure: str, reference: str, ratio: float, op: str | None, target: float | None) -> str:
    """One result line; ``op``/``target`` None means a reported figure without a bar (INFO)."""
    if op is None or target is None:
        return f"{bar}  {figure}  {reference}  ratio={ratio:.3g}  target none  INFO"
    return f"{bar}  {figure}  {reference}  ratio={ratio:.3g}  target {op} {target:g}  {verdict(ratio, op, target)}"


def alternate(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each contender per repetition, alternating who goes first (A B, B A, A B, ...)."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over repetitions of numerator / denominator (paired by repetition)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads if given; return the count in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _benches(args: argparse.Namespace) -> list[tuple[str, Callable[[], list[str]]]]:
    sys.path.insert(0, str(SCRIPTS))
    import bench_efficiency
    import bench_memory
    import bench_overhead
    import bench_scenes
    import bench_sliding_window

    quick, threads = args.quick, args.threads

    def sliding_window() -> list[str]:
        size, roi, repeats = (128, 32, 3) if quick else (1024, 64, 5)
        result = bench_sliding_window.run(size, roi, 0.25, 16, repeats)
        equal = result["max_abs_diff"] <= 1e-4
        text = line(
            "sliding_window",
            f"ours={result['ours_s']:.3f}s(max|diff|={result['max_abs_diff']:.1e})",
            f"monai={result['monai_s']:.3f}s",
            result["ratio"],
            "<=",
            bench_sliding_window.TARGET_RATIO,
        )
        if not equal:  # the bar is output within 1e-4 *and* time ratio <= 1
            text = text.rsplit("  ", 1)[0] + "  MISS(output differs from MONAI by more than 1e-4)"
        return [f"{text}  [{size}px roi={roi} overlap=0.25 tile_batch=16 repeats={repeats}]"]

    return [
        ("overhead", lambda: bench_overhead.lines(bench_overhead.run(quick=quick, threads=threads))),
        ("scenes", lambda: bench_scenes.lines(bench_scenes.run(quick=quick, threads=threads))),
        ("sliding_window", sliding_window),
        ("efficiency", lambda: bench_efficiency.lines(bench_efficiency.run(quick=quick, threads=threads))),
        ("memory", lambda: bench_memory.lines(bench_memory.run(quick=quick, sweep=args.sweep, threads=threads))),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in about a minute, figures not meaningful")
    parser.add_argument("--sweep", action="store_true", help="also run and time the default sweep (about 10 minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="overhead scenes sliding_window efficiency memory")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for the benchmarks and the training run (default 1; 0: torch's default, one per core)",
    )
    args = parser.parse_args(argv)
    args.threads = args.threads or None
    failed = False
    for name, bench in _benches(args):
        if args.only and name not in args.only:
            continue
        try:
            for text in bench():
                print(text, flush=True)
        except Exception:  # a crash is reported and the other benchmarks still run
            failed = True
            print(f"{name}  ERROR  {traceback.format_exc(limit=-1).strip().splitlines()[-1]}", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
