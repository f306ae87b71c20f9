"""Memory and wall time of real runs: peak RSS of one default training run; optionally the default sweep.

Usage: python scripts/bench_memory.py [--quick] [--sweep] [--threads N] [OVERRIDES ...]

The training run is ``python -m segsweep.train`` with the default config (``--quick``: ``debug=fast``) in a
subprocess, writing into a temporary dir. A small wrapper process starts it and reads
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the peak resident set of the run (target < 2.5 GB). The
wrapper's only child is the run, so nothing else this script did can leak into the figure.

Overrides change the training run (``model=smp``: the default-sized run of the model zoo's default network).
``--sweep`` also runs the default loss comparison (``python -m segsweep.train -m experiment=loss_comparison``,
15 jobs) and times it end to end (target <= 10 minutes on 2 cores). Without it the line says how to measure it:
``time make sweep`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from benchlib import REPO_ROOT, line

RSS_LIMIT_GB = 2.5
SWEEP_LIMIT_S = 600.0

# Runs argv[1:] as a child and prints its exit code, wall time and peak RSS (KiB on Linux) as JSON.
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(json.dumps({"returncode": done.returncode, "wall_s": time.perf_counter() - start,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stderr": done.stderr[-3000:]}))
"""


def measure(args: list[str], threads: int | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Peak RSS (bytes) and wall time of ``python args...``; raises if the run fails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        raise RuntimeError(f"python {' '.join(args)} exited {result['returncode']}:\n{result['stderr']}")
    return {"peak_rss_bytes": result["maxrss_kib"] * 1024, "wall_s": result["wall_s"], "command": f"python {' '.join(args)}"}


def run(
    quick: bool = False, sweep: bool = False, threads: int | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        train_overrides = [*(["debug=fast"] if quick else []), *(overrides or [])]
        train = measure(["-m", "segsweep.train", *train_overrides, f"hydra.run.dir={tmp}/train"], threads)
        result: dict[str, Any] = {"train": train, "quick": quick, "threads": threads, "overrides": overrides or []}
        result["rss_ratio"] = train["peak_rss_bytes"] / (RSS_LIMIT_GB * 1e9)
        result["passed"] = result["rss_ratio"] < 1.0
        if sweep:
            sweep_overrides = ["debug=fast", "trainer.max_epochs=1"] if quick else []
            result["sweep"] = measure(
                ["-m", "segsweep.train", "-m", "experiment=loss_comparison", *sweep_overrides, f"hydra.sweep.dir={tmp}/sweep"]
            )
    return result


def lines(r: dict[str, Any]) -> list[str]:
    train = r["train"]
    what = " ".join(["debug=fast" if r["quick"] else "default config", *r.get("overrides", [])])
    out = [
        line(
            "memory_peak_rss",
            f"train={train['peak_rss_bytes'] / 1e9:.2f}GB",
            f"limit={RSS_LIMIT_GB:.2f}GB",
            r["rss_ratio"],
            "<",
            1.0,
        )
        + f"  [python -m segsweep.train ({what}), {train['wall_s']:.0f}s wall"
        + (f", OMP_NUM_THREADS={r['threads']}" if r["threads"] else "")
        + "]"
    ]
    if "sweep" in r:
        sweep = r["sweep"]
        out.append(
            line(
                "default_sweep",
                f"wall={sweep['wall_s']:.0f}s",
                f"limit={SWEEP_LIMIT_S:.0f}s",
                sweep["wall_s"] / SWEEP_LIMIT_S,
                "<=",
                1.0,
            )
            + f"  [{sweep['command']}; peak RSS {sweep['peak_rss_bytes'] / 1e9:.2f}GB"
            + (" (quick: debug=fast, 1 epoch: NOT the bar)" if r["quick"] else "")
            + "]"
        )
    else:
        out.append(
            f"default_sweep  not_run  limit={SWEEP_LIMIT_S:.0f}s  ratio=n/a  target <= 1  SKIP  "
            '[measure on a quiet machine: `time make sweep`, or `make bench ARGS="--only memory --sweep"`]'
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="debug=fast run (a smoke test, not the bar)")
    parser.add_argument("--sweep", action="store_true", help="also run and time the default sweep (~10 minutes)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training run (default: unset)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training run (e.g. model=smp)")
    args = parser.parse_args()
    for text in lines(run(args.quick, args.sweep, args.threads, args.overrides)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
