"""Run every segsweep benchmark and print one line per bar (``make bench``).

Usage: python scripts/bench.py [--quick] [--sweep] [--only NAME ...] [--threads N]

Threads: by default every benchmark runs torch on ONE intra-op thread (the scene generator always does). The
two cores here are shared; with two OpenMP threads, another busy process makes every parallel region wait
for a descheduled thread, and a default training epoch took 32-38 s instead of 6 s (measured side by side):
the figures then measure the other processes, not the code. ``--threads 0`` uses torch's default (one per core),
for a quiet machine. The sweep benchmark runs the sweep as ``make sweep`` does (the default launcher shares the
cores out between jobs) unless ``--threads`` is given.

Each line reads ``<bar>  <figure>  <reference>  ratio=<r>  target <op> <t>  PASS|MISS`` (``INFO`` for figures
without a bar). Every ratio is measured side by side in one process: the two contenders alternate over several
repetitions and the ratio is the median of the per-repetition ratios, so load from other processes (the cores
are shared) hits both alike. The exit code is 0 even when a bar is missed (a MISS is a finding); it is 1 only
when a benchmark crashes or a correctness check inside one fails.

This file only runs the benchmarks: each is ``bench_<name>.py`` beside it, with ``run(quick=, threads=) -> dict``
and ``lines(dict) -> list[str]``; what they share is in ``benchlib.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

SCRIPTS = Path(__file__).resolve().parent
BENCHMARKS = (
    "overhead",
    "scenes",
    "sliding_window",
    "surface_metrics",
    "distance_maps",
    "efficiency",
    "memory",
    "folder_memory",
    "folder_loader",
    "pruning",
    "sweep",
)


def load(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported by its path as module ``<name>``, ``benchlib`` first (the benchmarks import it).

    Loading by path needs no change to ``sys.path``, wherever the caller runs (this script, or the tests).
    """
    if name in sys.modules:
        return sys.modules[name]
    if name != "benchlib":
        load("benchlib")
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_benchmark(name: str, args: argparse.Namespace) -> list[str]:
    """The result lines of ``bench_<name>.py`` with the command line's options."""
    bench = load(f"bench_{name}")
    # the sweep runs as `make sweep` does (the launcher's split of the cores) unless --threads is given
    threads = args.threads if name == "sweep" or args.threads is not None else 1
    options = {"quick": args.quick, "threads": threads or None}
    if name == "memory":
        options["sweep"] = args.sweep
    result = bench.lines(bench.run(**options))
    if name == "sweep":
        # the same ratio lines on a GPU when there is one, so the first GPU run gives numbers without new code
        result += bench.lines(bench.run(**options, device="cuda")) if torch.cuda.is_available() else [bench.GPU_SKIPPED]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in about a minute, figures not meaningful")
    parser.add_argument("--sweep", action="store_true", help="also run and time the default sweep (about 10 minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=BENCHMARKS, help=" ".join(BENCHMARKS))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for the benchmarks and the training run (default 1; 0: torch's default, one per "
        "core); the sweep's jobs (default: the launcher's split of the cores)",
    )
    args = parser.parse_args(argv)
    load("benchlib")  # reads torch's default thread count before any benchmark changes it
    failed = False
    for name in (name for name in BENCHMARKS if not args.only or name in args.only):
        try:
            for text in run_benchmark(name, args):
                print(text, flush=True)
        except Exception:  # a crash is reported and the other benchmarks still run
            failed = True
            print(f"{name}  ERROR  {traceback.format_exc(limit=-1).strip().splitlines()[-1]}", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
