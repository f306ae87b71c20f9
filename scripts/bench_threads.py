"""Threads on a shared machine: torch's default, OpenMP's passive wait policy, ``threads: auto`` and one thread.

Usage: python scripts/bench_threads.py [--quick] [--repeats 2] [--steps 6] [--settle 60]

Each variant trains default-config U-Net steps (batch 16, 64 px) in a FRESH process, because OpenMP reads its wait
policy when torch loads it (before ``import torch`` is over): the environment is set for the child before it starts.

- ``default``: torch's default, one thread per core, OpenMP's default wait policy (threads spin at barriers);
- ``passive``: as many threads, ``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0``, ``GOMP_SPINCOUNT=0`` (they sleep);
- ``auto``: ``threads: auto``, ``segsweep.machine.auto_threads()``: the cores the 1-minute load leaves idle;
- ``auto_passive``: both;
- ``one``: one thread.

Twice: on the machine as it is ("quiet": whatever else runs here, the load is printed) and with one competing busy
process (a CPU-burning loop, started ``--settle`` seconds before so that the load average sees it, as it sees a
colleague's sweep). The variants alternate (A B C, C B A, ...); each line's figure is the median step time and its
ratio a SPEEDUP over ``default`` in the same condition (> 1: faster). The last line names the variant with the best
geometric mean of its two speedups: the one a first run on a machine of unknown load should use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "GOMP_SPINCOUNT": "0"}
WAIT_KEYS = (*PASSIVE, "OMP_NUM_THREADS")
VARIANTS = {
    "default": ({}, "default"),
    "passive": (PASSIVE, "default"),
    "auto": ({}, "auto"),
    "auto_passive": (PASSIVE, "auto"),
    "one": ({}, "1"),
}
_BURN = "while True: pass"


def child(threads: str, steps: int, quick: bool) -> dict[str, Any]:
    """In the fresh process: the thread count ``threads`` names, then the median wall time of ``steps`` training steps."""
    import tempfile

    import torch
    from hydra.utils import instantiate

    from benchlib import QUICK_OVERRIDES, training_step
    from segsweep import machine
    from segsweep.app.build import build_module
    from segsweep.app.compose import compose_config

    load = machine.load_average()
    count = {"default": torch.get_num_threads(), "auto": machine.auto_threads()}.get(threads) or int(threads)
    torch.set_num_threads(count)
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        cfg = compose_config(list(QUICK_OVERRIDES) if quick else [], Path(tmp) / "run")
        torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic")))
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        images, masks = next(iter(datamodule.train_dataloader()))
        torch.manual_seed(0)
        module = build_module(cfg, datamodule)
        module.configure_model()
        module.train()
        optimizer = module.optimizer_factory(params=module.parameters())
        for _ in range(2):  # warm-up: the allocator, OpenMP's pool
            training_step(module, optimizer, images, masks)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            training_step(module, optimizer, images, masks)
            times.append(time.perf_counter() - start)
    return {"threads": count, "step_s": statistics.median(times), "load": load, "wait": os.environ.get("OMP_WAIT_POLICY")}


def _measure(name: str, steps: int, quick: bool) -> dict[str, Any]:
    env_extra, threads = VARIANTS[name]
    env = {key: value for key, value in os.environ.items() if key not in WAIT_KEYS} | env_extra
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", threads, "--steps", str(steps), *(["--quick"] if quick else [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: the child exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _condition(repeats: int, steps: int, quick: bool) -> dict[str, list[dict[str, Any]]]:
    names = list(VARIANTS)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            results[name].append(_measure(name, steps, quick))
    return results


def run(quick: bool = False, repeats: int | None = None, steps: int | None = None, settle: float | None = None) -> dict:
    """Both conditions, every variant in its own processes; times in seconds."""
    repeats, steps = repeats or (1 if quick else 2), steps or (2 if quick else 6)
    settle = (0.0 if quick else 60.0) if settle is None else settle
    from benchlib import cpu_name  # here, as in child(): benchlib imports torch, which this process never needs

    results: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "conditions": {}}
    results["conditions"]["quiet"] = _condition(repeats, steps, quick)
    burner = subprocess.Popen([sys.executable, "-c", _BURN])
    try:
        time.sleep(settle)
        results["conditions"]["busy"] = _condition(repeats, steps, quick)
    finally:
        burner.kill()
        burner.wait()
    return results


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(run[key]) for run in runs if run[key] is not None) if runs else math.nan


def lines(r: dict[str, Any]) -> list[str]:
    out = [f"threads_cpu  {r['cpu']}  cores={r['cores']}"]
    speedups: dict[str, list[float]] = {}
    for condition, variants in r["conditions"].items():
        reference = _median(variants["default"], "step_s")
        for name, runs in variants.items():
            step, speedup = _median(runs, "step_s"), reference / _median(runs, "step_s")
            speedups.setdefault(name, []).append(speedup)
            threads = "/".join(str(run["threads"]) for run in runs)
            loads = "/".join(f"{run['load']:.1f}" if run["load"] is not None else "?" for run in runs)
            out.append(
                f"threads_{condition}_{name}  step={step * 1000:.0f}ms  default={reference * 1000:.0f}ms  "
                f"ratio={speedup:.3g}  target none  INFO  [threads={threads}, load at start {loads}]"
            )
    means = {name: math.exp(statistics.fmean(math.log(value) for value in values)) for name, values in speedups.items()}
    best = max(means, key=means.__getitem__)
    summary = "  ".join(f"{name}={value:.3g}" for name, value in means.items())
    out.append(f"threads_winner  {best}  [geometric mean of the quiet and busy speedups over default: {summary}]")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="debug=fast sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="processes per variant and condition (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per process (default 6)")
    parser.add_argument("--settle", type=float, default=None, help="seconds the busy process runs before (default 60)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps or 6, args.quick)))
        return 0
    for text in lines(run(args.quick, args.repeats, args.steps, args.settle)):
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
