"""How a multirun uses the machine: how many jobs run side by side (processes) and how many torch threads each gets.

conf/hydra/launcher/parallel.yaml (the default launcher of multiruns) asks ``plan_split`` once per batch of jobs and
passes the split to every job as overrides, so each job's records hold the thread count its numbers depend on. The
Ray launcher (conf/hydra/launcher/ray.yaml) passes each job its CPUs the same way (``with_threads``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# hydra.launcher.memory_per_job_gb counts binary gigabytes
GIB = 2**30


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


def plan_split(
    jobs: int,
    cores: int,
    gpus: int = 0,
    memory: int | None = None,
    memory_per_job_gb: float = 2.0,
    processes: int | str = "auto",
) -> Split:
    """``auto``: one process per GPU, else one per core (one thread each: measured faster than fewer processes with
    more threads, BENCHMARKS.md), never more than the jobs or than ``memory`` (bytes) allows; the cores are shared out
    evenly. ``cores``, ``gpus`` and ``memory``: what segsweep.machine says this process has."""
    if processes == "auto":
        count = min(jobs, gpus if gpus else cores)
        if memory is not None and memory_per_job_gb > 0:
            count = min(count, int(memory // (memory_per_job_gb * GIB)))
    elif isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1:
        count = min(jobs, processes)
    else:
        raise ValueError(f"hydra.launcher.processes must be 'auto' or an integer >= 1, got {processes!r}")
    count = max(1, count)
    return Split(processes=count, threads=max(1, cores // count), cores=cores, gpus=min(gpus, count))


def with_threads(overrides: Sequence[str], threads: int) -> list[str]:
    """A job's overrides with ``threads=<threads>``, unless the command gave ``threads`` (which wins)."""
    keys = {override.lstrip("+~").partition("=")[0] for override in overrides}
    return [*overrides] if "threads" in keys else [*overrides, f"threads={threads}"]


def with_split(overrides: Sequence[str], split: Split) -> list[str]:
    """A job's overrides with its thread count (unless the command gave ``threads``) and the launcher's process count."""
    return [*with_threads(overrides, split.threads), f"hydra.launcher.processes={split.processes}"]
