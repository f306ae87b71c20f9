"""The default sweep against the machine's arithmetic: how close `make sweep` comes to its FLOP limit.

Usage: python scripts/bench_sweep.py [--quick] [--threads N] [--device cpu|cuda] [--baseline CHECKOUT]
       [--override KEY=VALUE ...] [--step-only] [--json FILE]

1. The FLOPs of the whole sweep (``experiment=loss_comparison``; ``_gpu`` on a GPU): for every job, forward and
   backward of every training step, and the forward of every sanity, validation and test batch. One batch of each
   kind is counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls) and multiplied by
   the number of such batches (a partial last batch in proportion). Every job of the sweep has the same network and
   sizes; the losses differ by a negligible number of FLOPs.
2. The machine's float32 matmul FLOP/s (2048x2048), measured in the same run just before and just after the sweep:
   the higher of one process on every core and the sum of one one-thread process per core multiplying at the same
   time (how the default launcher uses the cores); the higher of the two measurements is the limit. On a GPU a
   4096x4096 matmul in the dtype the experiment trains in (bf16 under ``trainer.precision=bf16-mixed``).
3. The sweep itself, ``python -m segsweep.train -m experiment=loss_comparison`` into a temporary dir, timed, with the
   default launcher's split of the cores (``segsweep.app.parallel``: here 2 jobs at a time, 1 thread each).

Lines:
- ``sweep_flop_fraction``: FLOP limit (sweep FLOPs / matmul FLOP/s) over the sweep's wall time (target >= 0.65);
- ``sweep_train_step``: one job's training step alone, at the job's thread count, achieved FLOP/s over the
  matmul FLOP/s of as many threads (INFO);
- ``sweep_overhead_share``: the sweep's fixed costs, what DESIGN's bar names (start-up, the report, the idle tail), as a
  share of a job: the core-seconds of the sweep (wall time x processes) that no job was running, over all of them.
  A job runs from the first to the last line of its train.log (job_spans in benchlib), so whatever a job does
  outside its training steps, sanity check, validation, test, checkpoints, is its own work, and everything
  before its first line (its config composed in the worker, the first job's imports) is counted as fixed cost.
  Until 2026-12-07 this line was the next one's figure (against 0.10); it is now the bar's definition (<= 0.15);
- ``sweep_outside_steps_share``: the old overhead line: the share of a job's wall time that is not training steps
  (startup, sanity check, validation, test, checkpoints, plots, report, and the slowdown of jobs sharing the machine),
  from the measured step time and the sweep's wall time per job and process (INFO);
- ``sweep_identical`` (with ``--baseline``): every job's test metrics, best epoch and per-epoch history (less wall
  times) in the two sweeps' metrics.json, compared for bit-identity (target: all jobs).

``--override`` adds overrides to every job (and to the counted one), ``--step-only`` measures the training step
alone (no sweep: with ``module.compile=true`` a compiled step), ``--json`` writes the figures (scripts/gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from benchlib import (
    QUICK_OVERRIDES,
    concurrent_matmul_flops_per_s,
    cpu_name,
    differing_jobs,
    line,
    matmul_flops_per_s,
    set_threads,
    step_flops,
    timed_sweep,
    training_step,
)
from segsweep import machine
from segsweep.app.build import build_module
from segsweep.app.compose import compose_config
from segsweep.app.parallel import plan_split
from segsweep.runs.cli import configure_torch
from segsweep.runs.record import RECORD_FILE, existing_record

FLOP_FRACTION_TARGET = 0.65
OVERHEAD_TARGET = 0.15  # DESIGN.md, default sweep: fixed costs <= 15% of a job
QUICK_SWEEP = ("loss=ce,dice", "seed=1")
GPU_SKIPPED = "sweep_flop_fraction_gpu  skipped: no CUDA device here"


def experiment(device: str) -> str:
    return "experiment=loss_comparison_gpu" if device == "cuda" else "experiment=loss_comparison"


def forward_flops(module: Any, images: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(images)
    return counter.get_total_flops()


def batches(size: int, batch_size: int, limit: Any) -> float:
    """Batches of one pass over ``size`` images, in full-batch units, under Lightning's ``limit_*_batches``."""
    count = size / batch_size
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(count, limit)
    return count * float(limit if limit is not None else 1.0)


def job_flops(overrides: list[str], device: str) -> dict[str, Any]:
    """FLOPs of one job of the sweep: its training steps and evaluation forwards."""
    cfg = compose_config(overrides, Path(tempfile.mkdtemp()))
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule).to(device)
    sizes, batch = datamodule.split_sizes, cfg.data.batch_size
    images = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    masks = torch.randint(0, datamodule.num_classes, (batch, cfg.data.image_size, cfg.data.image_size), device=device)
    trainer, epochs = cfg.trainer, cfg.trainer.max_epochs
    train_batches = batches(sizes["train"], batch, trainer.get("limit_train_batches")) * epochs
    val_batches = batches(sizes["val"], batch, trainer.get("limit_val_batches")) * epochs
    sanity = min(trainer.get("num_sanity_val_steps", 2), math.ceil(sizes["val"] / batch))
    test_batches = batches(sizes["test"], batch, trainer.get("limit_test_batches"))
    step, forward = step_flops(module, images, masks), forward_flops(module, images)
    job = step * train_batches + forward * (val_batches + sanity + test_batches)
    return {"step_flops": step, "train_batches": train_batches, "job_flops": job, "cfg": cfg}


def step_seconds(cfg: Any, device: str, repeats: int) -> float:
    """Median wall time of one training step of the sweep's network at its batch size (after a warm-up step)."""
    configure_torch(None)  # the process-wide settings a job runs with
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule).to(device).train()
    module.configure_model()  # as Lightning does before fit: module.compile=true compiles the network here
    optimizer = module.optimizer_factory(params=module.parameters())
    images, masks = next(iter(datamodule.train_dataloader()))
    images, masks = images.to(device), masks.to(device)
    # a GPU job trains under bf16-mixed autocast (trainer=gpu); the CPU study in float32
    bf16 = device == "cuda" and str(cfg.trainer.precision).startswith("bf16")
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        training_step(module, optimizer, images, masks, autocast=bf16, device_type=device)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def recorded_processes(sweep_dir: Path) -> int | None:
    """The processes the sweep's launcher ran its jobs in, as its first job's manifest records them."""
    manifests = [existing_record(path).get("manifest") or {} for path in sorted(sweep_dir.glob(f"*/{RECORD_FILE}"))]
    return next((item["parallel_processes"] for item in manifests if isinstance(item.get("parallel_processes"), int)), None)


def best_matmul_flops_per_s() -> float:
    """The best of three measurements of a warmed-up 2048x2048 float32 matmul, at torch's current thread count."""
    measure = matmul_flops_per_s(2048, repeats=5)
    measure()
    return max(measure() for _ in range(3))


def matmul_rate(device: str, cores: int, dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul FLOP/s: on a CPU the higher of one process on ``cores`` threads and ``cores`` one-thread
    processes at the same time; on a GPU the best of three timings of ten warmed-up 4096x4096 matmuls in ``dtype``."""
    if device == "cuda":
        a, b = torch.randn(4096, 4096, device=device, dtype=dtype), torch.randn(4096, 4096, device=device, dtype=dtype)
        torch.mm(a, b)
        best = math.inf
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                torch.mm(a, b)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return 10 * 2 * 4096**3 / best
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    one_process = best_matmul_flops_per_s()
    torch.set_num_threads(threads)
    return max(one_process, concurrent_matmul_flops_per_s(cores) if cores > 1 else 0.0)


def run(
    quick: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    repeats: int = 10,
    baseline: Path | None = None,
    extra: Sequence[str] = (),
    step_only: bool = False,
) -> dict[str, Any]:
    """Count, measure and time the sweep; ``quick``: a 2-job sweep of tiny sizes (figures not meaningful).

    ``threads``: torch threads per job, and the cores the sweep may use (None: the default launcher's split).
    ``baseline``: another checkout whose sweep is timed right after this one's, with the same command.
    ``extra``: overrides of every job; ``step_only``: the training step and the matmul alone, no sweep."""
    overrides = [experiment(device), *(QUICK_OVERRIDES if quick else ()), *extra]
    if threads:
        overrides.append(f"threads={threads}")
    counted = job_flops(overrides, device)  # one job: every job has the same network and sizes
    cfg = counted.pop("cfg")
    if quick:
        jobs = 2
        overrides += QUICK_SWEEP
    else:
        jobs = math.prod(len(str(values).split(",")) for values in cfg_sweep_params(overrides).values())
    cores = threads or machine.available_cores()
    gpus = machine.gpu_count() if device == "cuda" else 0
    split = plan_split(jobs, cores, gpus, machine.available_memory())  # the launcher's choice on a CPU (threads)
    used = set_threads(threads or split.threads)
    counted["sweep_flops"] = counted["job_flops"] * jobs
    step_s = step_seconds(cfg, device, 3 if quick else repeats)
    step_rate = best_matmul_flops_per_s() if device == "cpu" else None  # at the job's threads, for the step line
    # a GPU job trains in bf16 under bf16-mixed: its limit is the bf16 matmul rate
    dtype = torch.bfloat16 if device == "cuda" and str(cfg.trainer.precision).startswith("bf16") else torch.float32
    before = matmul_rate(device, cores, dtype)
    if step_only:
        return {
            **counted, "device": device, "step_s": step_s, "matmul_flops_per_s": before, "threads": used,
            "step_matmul_flops_per_s": step_rate or before, "matmul_dtype": str(dtype).removeprefix("torch."),
            "step_fraction": counted["step_flops"] / step_s / (step_rate or before), "step_only": True,
        }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        sweep = timed_sweep(overrides, Path(tmp) / "sweep", threads)
        # on GPUs the launcher packs as many jobs as it measures room for (hydra.launcher.jobs_per_gpu: auto)
        processes = recorded_processes(Path(tmp) / "sweep") or split.processes
        old = timed_sweep(overrides, Path(tmp) / "baseline", threads, baseline) if baseline else None
        old_processes = (recorded_processes(Path(tmp) / "baseline") or split.processes) if baseline else None
        compared = differing_jobs(Path(tmp) / "sweep", Path(tmp) / "baseline") if baseline else None
    for timed, count in ((sweep, processes), (old, old_processes)):
        if timed is not None:  # the core-seconds no job ran, of the processes the launcher really ran
            timed["fixed_share"] = max(0.0, 1 - timed["busy_s"] / (timed["wall_s"] * count))
    wall = sweep["wall_s"]
    after = matmul_rate(device, cores, dtype)
    rate = max(before, after)
    limit = counted["sweep_flops"] / rate
    train_per_job = step_s * counted["train_batches"]
    job_wall = wall * processes / jobs  # each process runs jobs / processes of them, one after another
    return {
        **counted,
        "jobs": jobs,
        "threads": used,
        "processes": processes,
        "device": device,
        "quick": quick,
        "matmul_flops_per_s": rate,
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "step_matmul_flops_per_s": step_rate or rate,
        "sweep_wall_s": wall,
        "baseline": baseline,
        "baseline_wall_s": old["wall_s"] if old else None,
        "sweep": sweep,
        "baseline_sweep": old,
        "compared": compared,
        "flop_limit_s": limit,
        "fraction": limit / wall,
        "step_s": step_s,
        "step_fraction": counted["step_flops"] / step_s / (step_rate or rate),
        "job_wall_s": job_wall,
        "outside_steps_share": max(0.0, 1 - train_per_job / job_wall),
        "overhead_share": sweep["fixed_share"],
    }


def cfg_sweep_params(overrides: list[str]) -> dict[str, Any]:
    """The sweeper's params of the composed sweep (the jobs it will launch)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from segsweep.app.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    return dict(composed.hydra.sweeper.params or {})


def fixed_costs(sweep: dict[str, float]) -> str:
    return f"start-up {sweep['startup_s']:.1f}s, report {sweep['report_s']:.1f}s after the last job"


def step_line(r: dict[str, Any]) -> str:
    """``sweep_train_step``: one job's training step against the machine's matmul (a GPU's in the step's dtype)."""
    suffix = "_gpu" if r["device"] == "cuda" else ""
    against = f"the device's {r.get('matmul_dtype', 'float32')} matmul" if suffix else "a matmul on as many"
    return (
        line(
            f"sweep_train_step{suffix}",
            f"achieved={r['step_flops'] / r['step_s'] / 1e9:.1f}GFLOP/s({r['step_s'] * 1e3:.0f}ms/step)",
            f"matmul={r['step_matmul_flops_per_s'] / 1e9:.1f}GFLOP/s",
            r["step_fraction"],
            None,
            None,
        )
        + f"  [one job's training step alone, {r['threads']} thread(s), against {against}]"
    )


def lines(r: dict[str, Any]) -> list[str]:
    if r.get("step_only"):
        return [step_line(r)]
    suffix = "_gpu" if r["device"] == "cuda" else ""
    baseline = []
    if r.get("baseline_wall_s"):
        limit, old, before = r["flop_limit_s"], r["baseline_wall_s"], r["baseline_sweep"]
        this = f"this={r['sweep_wall_s']:.0f}s"
        baseline.append(
            line(f"sweep_speedup{suffix}", this, f"baseline={old:.0f}s", old / r["sweep_wall_s"], None, None)
            + f"  [the same sweep command in {r['baseline']}: its FLOP fraction {limit / old:.2f}, its overhead share "
            f"{before['fixed_share']:.3f} ({fixed_costs(before)})]"
        )
    if r.get("compared") is not None:
        shared, differing = r["compared"]
        same = shared - sum(1 for name in differing if "(in one only)" not in name)
        baseline.append(
            line(f"sweep_identical{suffix}", f"identical={same}", f"jobs={r['jobs']}", same / r["jobs"], ">=", 1.0)
            + f"  [metrics.json test, best and history per job against {r['baseline']}; differing: {differing or 'none'}]"
        )
    what = f"{r['jobs']} jobs, {r['sweep_flops'] / 1e12:.2f} TFLOP, machine matmul {r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s"
    what += f", {r['processes']} process(es) x {r['threads']} thread(s)" + (", --quick: not the bar" if r["quick"] else "")
    steps = f"{r['train_batches']:.0f} training steps of {r['step_s'] * 1e3:.0f}ms"
    sweep, core_s = r["sweep"], r["sweep_wall_s"] * r["processes"]
    flop_limit, wall = f"flop_limit={r['flop_limit_s']:.0f}s", f"wall={r['sweep_wall_s']:.0f}s"
    idle, outside = f"no_job_running={sweep['fixed_share'] * core_s:.0f}core-s", f"sweep={core_s:.0f}core-s"
    not_training = f"not_training={r['job_wall_s'] - r['step_s'] * r['train_batches']:.1f}s job={r['job_wall_s']:.1f}s"
    return [
        line(f"sweep_flop_fraction{suffix}", flop_limit, wall, r["fraction"], ">=", FLOP_FRACTION_TARGET)
        + f"  [{what}; {cpu_name()}]",
        step_line(r),
        line(f"sweep_overhead_share{suffix}", idle, outside, r["overhead_share"], "<=", OVERHEAD_TARGET)
        + f"  [fixed costs: {fixed_costs(sweep)}, the idle tail and the gaps between jobs (job: first to last line of its log)]",
        line(f"sweep_outside_steps_share{suffix}", *not_training.split(), r["outside_steps_share"], None, None)
        + f"  [the old overhead line, per job and process: {steps}; the rest is startup, sanity check, validation, "
        "test, checkpoints, plots, the report and jobs sharing the machine]",
        *baseline,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-job sweep of tiny sizes (a smoke test, not the bar)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per job and cores (0: the launcher's split)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--baseline", type=Path, help="another segsweep checkout: its sweep is timed too (before/after)")
    parser.add_argument("--override", action="append", default=[], help="an override of every job (repeatable)")
    parser.add_argument("--step-only", action="store_true", help="time the training step alone, no sweep")
    parser.add_argument("--json", type=Path, help="write the figures to this file too")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(GPU_SKIPPED)
        return 0
    result = run(
        args.quick, args.threads or None, args.device, baseline=args.baseline, extra=args.override, step_only=args.step_only
    )
    for text in lines(result):
        print(text, flush=True)
    if args.json:
        args.json.write_text(json.dumps({key: value for key, value in result.items() if key != "baseline"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
