"""Memory of training on a folder dataset: peak RSS on 2,000 images of 512x384 vs the scenes default; and the start-up.

Usage: python scripts/bench_folder_memory.py [--quick] [--threads N] [--images N] [--keep DIR]

The folder is written by ``segsweep-export-scenes`` (PNG images, L masks) into a temporary dir. Three runs, each a
subprocess measured by bench_memory's wrapper (peak RSS from ``getrusage(RUSAGE_CHILDREN)``: the largest single
process of the run, which includes the DataLoader workers and the scan's pool, forked from it):

1. ``python -m segsweep.train`` with the defaults (the scenes): the reference;
2. ``python -m segsweep.train data=folder data.root=<folder>`` with an empty scan cache: the one-time scan (checks
   every pair, counts class pixels) and a short training (1 epoch of ``--batches`` batches, a few whole-image val
   and test batches by sliding windows);
3. the same again with the cache filled: the run starts training at once.

The bar: folder peak RSS / scenes peak RSS <= 1.5 (a folder is read lazily, never held in RAM). The start-up line
reports how long the scan took (run 2 minus run 3); it is paid once per dataset, not per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, line

RATIO_LIMIT = 1.5

# Runs argv[1:] as a child and prints its exit code, wall time and peak RSS (KiB on Linux) as JSON (as bench_memory.py).
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(json.dumps({"returncode": done.returncode, "wall_s": time.perf_counter() - start,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stderr": done.stderr[-3000:]}))
"""


def measure(args: list[str], threads: int | None = None) -> dict[str, Any]:
    """Peak RSS (bytes) and wall time of ``python args...`` in a wrapper whose only child is the run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, "-c", _WRAPPER, sys.executable, *args]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["returncode"] != 0:
        raise RuntimeError(f"python {' '.join(args)} exited {result['returncode']}:\n{result['stderr']}")
    return {"peak_rss_bytes": result["maxrss_kib"] * 1024, "wall_s": result["wall_s"]}


def export(out_dir: Path, images: int, height: int, width: int) -> float:
    """Seconds to write ``images`` train scenes (and 50 val) of height x width with segsweep-export-scenes."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "segsweep.export_scenes", str(out_dir), "--train", str(images), "--val", "50", "--test", "0"]
        + ["--image-size", f"{height}x{width}"],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def run(quick: bool = False, threads: int | None = 1, images: int = 2000, batches: int = 40, keep: str | None = None) -> dict:
    height, width = (96, 128) if quick else (384, 512)
    images = 64 if quick else images
    with tempfile.TemporaryDirectory(prefix="bench_folder_") as tmp:
        root = Path(keep) if keep else Path(tmp) / "folder"
        export_s = export(root, images, height, width) if not (root / "classes.yaml").exists() else 0.0
        scenes_overrides = ["debug=fast"] if quick else []
        scenes = measure(["-m", "segsweep.train", *scenes_overrides, f"hydra.run.dir={tmp}/scenes"], threads)
        folder_args = [
            "-m",
            "segsweep.train",
            "data=folder",
            f"data.root={root}",
            f"data.cache_dir={tmp}/cache",
            "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={batches}",
            "+trainer.limit_val_batches=5",
            "+trainer.limit_test_batches=5",
        ]
        cold = measure([*folder_args, f"hydra.run.dir={tmp}/folder_cold"], threads)
        warm = measure([*folder_args, f"hydra.run.dir={tmp}/folder_warm"], threads)
    return {
        "images": images,
        "size": (height, width),
        "batches": batches,
        "export_s": export_s,
        "scenes": scenes,
        "cold": cold,
        "warm": warm,
        "threads": threads,
        "quick": quick,
        "ratio": max(cold["peak_rss_bytes"], warm["peak_rss_bytes"]) / scenes["peak_rss_bytes"],
    }


def lines(r: dict[str, Any]) -> list[str]:
    scenes, cold, warm = r["scenes"], r["cold"], r["warm"]
    height, width = r["size"]
    gb = 1e9
    what = f"{r['images']} images of {width}x{height}, 1 epoch of {r['batches']} batches + 5 val/test batches"
    threads = f", OMP_NUM_THREADS={r['threads']}" if r["threads"] else ""
    return [
        line(
            "folder_memory",
            f"folder={max(cold['peak_rss_bytes'], warm['peak_rss_bytes']) / gb:.2f}GB",
            f"scenes={scenes['peak_rss_bytes'] / gb:.2f}GB",
            r["ratio"],
            "<=",
            RATIO_LIMIT,
        )
        + f"  [data=folder: {what}, peak RSS cold cache {cold['peak_rss_bytes'] / gb:.2f}GB, warm "
        f"{warm['peak_rss_bytes'] / gb:.2f}GB; scenes: python -m segsweep.train"
        + (" debug=fast" if r["quick"] else " (defaults)")
        + f"{threads}]",
        line(
            "folder_startup",
            f"cold={cold['wall_s']:.0f}s",
            f"warm={warm['wall_s']:.0f}s",
            cold["wall_s"] / warm["wall_s"],
            None,
            None,
        )
        + f"  [the one-time scan of {r['images'] + 50} pairs is about {cold['wall_s'] - warm['wall_s']:.0f}s, then cached; "
        f"export of the folder took {r['export_s']:.0f}s]",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images of 128x96 vs debug=fast (a smoke test, not the bar)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (default 1; 0: unset)")
    parser.add_argument("--images", type=int, default=2000, help="train images in the folder (default 2000)")
    parser.add_argument("--batches", type=int, default=40, help="training batches of the folder runs (default 40)")
    parser.add_argument("--keep", default=None, help="write the folder here (reused if it already holds one)")
    args = parser.parse_args()
    for text in lines(run(args.quick, args.threads or None, args.images, args.batches, args.keep)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
