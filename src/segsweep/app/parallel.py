"""How a multirun uses the machine: how many jobs run side by side (processes) and how many torch threads each gets.

conf/hydra/launcher/parallel.yaml (the default launcher of multiruns) asks ``plan_split`` once per batch of jobs and
passes the split to every job as overrides, so each job's records hold the thread count its numbers depend on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Split:
    """``processes`` jobs at a time, ``threads`` torch threads each; ``gpus``: one per process when > 0."""

    processes: int
    threads: int
    cores: int
    gpus: int = 0

    def describe(self) -> str:
        device = f", one GPU each of {self.gpus}" if self.gpus else ""
        plural = "es" if self.processes != 1 else ""
        return f"{self.processes} process{plural} x {self.threads} thread(s) ({self.cores} cores{device})"


def available_cores() -> int:
    """The cores this process may use: its CPU affinity (cgroups, SLURM, taskset), at most ``OMP_NUM_THREADS`` when
    that is set (a scheduler's or a test harness's statement of this process tree's share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(limit))) if limit.isdigit() and int(limit) > 0 else max(1, cores)


def available_memory_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Memory available to new processes (Linux's MemAvailable), None where it is not known."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return None
    return None


def plan_split(
    jobs: int,
    cores: int,
    gpus: int = 0,
    memory_gb: float | None = None,
    memory_per_job_gb: float = 2.0,
    processes: int | str = "auto",
) -> Split:
    """``auto``: one process per GPU, else one per core (one thread each: measured faster than fewer processes with
    more threads, BENCHMARKS.md), never more than the jobs or than memory allows; the cores are shared out evenly."""
    if processes == "auto":
        count = min(jobs, gpus if gpus else cores)
        if memory_gb is not None and memory_per_job_gb > 0:
            count = min(count, int(memory_gb // memory_per_job_gb))
    elif isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1:
        count = min(jobs, processes)
    else:
        raise ValueError(f"hydra.launcher.processes must be 'auto' or an integer >= 1, got {processes!r}")
    count = max(1, count)
    return Split(processes=count, threads=max(1, cores // count), cores=cores, gpus=min(gpus, count))


def with_split(overrides: Sequence[str], split: Split) -> list[str]:
    """A job's overrides with its thread count (unless the command gave ``threads``) and the launcher's process count."""
    keys = {override.lstrip("+~").partition("=")[0] for override in overrides}
    added = [] if "threads" in keys else [f"threads={split.threads}"]
    return [*overrides, *added, f"hydra.launcher.processes={split.processes}"]
