"""How a multirun uses the machine: how many jobs run side by side (processes), how many share a GPU, their threads.

conf/hydra/launcher/parallel.yaml (the default launcher of multiruns) asks ``plan_split`` once per batch of jobs and
passes the split to every job as overrides, so each job's records hold the thread count its numbers depend on and the
packing it ran in. On a GPU host ``jobs_per_gpu`` (``auto``: from each GPU's free memory and the footprint of a job,
measured by app/gpu_footprint.py) jobs share each GPU; each worker then claims one (GPU, slot) (app/gpu_slots.py).
The Ray launcher (conf/hydra/launcher/ray.yaml) passes each job its CPUs the same way (``with_threads``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # machine imports torch; the launching process plans without it
    from segsweep.machine import Gpu

# hydra.launcher.memory_per_job_gb counts binary gigabytes
GIB = 2**30


@dataclass(frozen=True)
class Split:
    """``processes`` jobs at a time, ``threads`` torch threads each; on ``gpus`` GPUs (0: none), at most
    ``jobs_per_gpu`` processes each; ``footprint``: a job's GPU memory in bytes where it was measured."""

    processes: int
    threads: int
    cores: int
    gpus: int = 0
    jobs_per_gpu: int = 0
    footprint: int | None = None

    def describe(self) -> str:
        plural = "es" if self.processes != 1 else ""
        if not self.gpus:
            return f"{self.processes} process{plural} x {self.threads} thread(s) ({self.cores} cores)"
        gpu_plural = "s" if self.gpus != 1 else ""
        job_plural = "s" if self.jobs_per_gpu != 1 else ""
        measured = "" if self.footprint is None else f", {self.footprint / GIB:.2f} GiB of GPU memory a job (measured)"
        return (
            f"{self.gpus} GPU{gpu_plural} x {self.jobs_per_gpu} job{job_plural} each: {self.processes} process{plural} x "
            f"{self.threads} thread(s) ({self.cores} cores{measured})"
        )


def check_launcher(
    processes: Any = "auto", jobs_per_gpu: Any = "auto", max_jobs_per_gpu: Any = 8, gpu_memory_fraction: Any = 0.8
) -> None:
    """The parallel launcher's keys (conf/hydra/launcher/parallel.yaml): a bad value is a ValueError naming the key."""
    for key, value in (("processes", processes), ("jobs_per_gpu", jobs_per_gpu)):
        if value != "auto" and not _count(value):
            raise ValueError(f"hydra.launcher.{key} must be 'auto' or an integer >= 1, got {value!r}")
    if not _count(max_jobs_per_gpu):
        raise ValueError(f"hydra.launcher.max_jobs_per_gpu must be an integer >= 1, got {max_jobs_per_gpu!r}")
    fraction_ok = isinstance(gpu_memory_fraction, (int, float)) and not isinstance(gpu_memory_fraction, bool)
    if not fraction_ok or not 0 < gpu_memory_fraction <= 1:
        raise ValueError(f"hydra.launcher.gpu_memory_fraction must be a number in (0, 1], got {gpu_memory_fraction!r}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def plan_jobs_per_gpu(
    setting: int | str, gpus: Sequence[Gpu], footprint: int | None, fraction: float = 0.8, maximum: int = 8
) -> int:
    """Jobs per GPU: ``setting`` where it is a number; ``auto``: as many jobs of ``footprint`` bytes (their CUDA
    context included) as ``fraction`` of the free memory of the GPU with the least holds (the rest: what a job's
    memory varies by, and fragmentation), at most ``maximum`` (beyond a few processes more only contend for the GPU),
    at least 1; 1 where no footprint was measured."""
    if setting != "auto":
        return int(setting)
    if footprint is None or footprint <= 0 or not gpus:
        return 1
    fits = min(int(gpu.free * fraction // footprint) for gpu in gpus)
    return max(1, min(maximum, fits))


def plan_split(
    jobs: int,
    cores: int,
    gpus: int = 0,
    memory: int | None = None,
    memory_per_job_gb: float = 2.0,
    processes: int | str = "auto",
    jobs_per_gpu: int = 1,
    footprint: int | None = None,
) -> Split:
    """``auto``: ``jobs_per_gpu`` processes per GPU, else one per core (one thread each: measured faster than fewer
    processes with more threads, BENCHMARKS.md), never more than the jobs or than ``memory`` (bytes) allows; the cores
    are shared out evenly (at least one thread each). On GPUs more than one process per GPU only while each has a core
    of its own: a process drives its GPU from one Python thread, and two on a core wait for each other.
    ``cores``, ``gpus`` and ``memory``: what segsweep.machine says this process has. An explicit ``processes`` wins
    over ``jobs_per_gpu``: its processes are shared out over the GPUs."""
    check_launcher(processes, jobs_per_gpu)
    if processes == "auto":
        count = min(jobs, max(gpus, min(gpus * jobs_per_gpu, cores))) if gpus else min(jobs, cores)
        if memory is not None and memory_per_job_gb > 0:
            count = min(count, int(memory // (memory_per_job_gb * GIB)))
    else:
        count = min(jobs, int(processes))
    count = max(1, count)
    used = min(gpus, count)
    per_gpu = math.ceil(count / used) if used else 0
    return Split(count, max(1, cores // count), cores, used, per_gpu, footprint if used else None)


def with_threads(overrides: Sequence[str], threads: int) -> list[str]:
    """A job's overrides with ``threads=<threads>``, unless the command gave ``threads`` (which wins)."""
    keys = {override.lstrip("+~").partition("=")[0] for override in overrides}
    return [*overrides] if "threads" in keys else [*overrides, f"threads={threads}"]


def with_split(overrides: Sequence[str], split: Split) -> list[str]:
    """A job's overrides with its thread count (unless the command gave ``threads``), the launcher's process count
    and, on GPUs, the processes per GPU (the slots its worker claims: app/gpu_slots.py)."""
    packing = [f"hydra.launcher.jobs_per_gpu={split.jobs_per_gpu}"] if split.gpus else []
    return [*with_threads(overrides, split.threads), f"hydra.launcher.processes={split.processes}", *packing]
