"""What the machine offers this process: cores, load, memory (within its container's cgroup limit), GPUs and their memory.

The one place these are read: the launcher plans its processes (app/parallel.py), validation refuses runs
(app/config.py) and folder datasets start their DataLoader workers (data/folder.py) from the same numbers. Memory is
in bytes throughout. ``ROOT`` is where ``/proc`` and ``/sys`` are read from (tests point it at a fake tree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path("/")
# A CUDA device needs one of these: NVIDIA's control device, WSL2's GPU bridge, ROCm's (HIP's torch.cuda) driver.
# Without any, torch.cuda sees no device, so it is not asked: importing torch (2 s) would delay a CPU multirun's
# launching process, which only needs to know that it has no GPU (BENCHMARKS.md, the default sweep).
GPU_DEVICE_NODES = ("dev/nvidiactl", "dev/dxg", "dev/kfd")
# cgroup v2 writes "max" where no limit is set, v1 the kernel's largest page count in bytes (9223372036854771712)
NO_LIMIT = 2**62


@dataclass(frozen=True)
class Gpu:
    """One CUDA device: its index, name and memory in bytes (``free``: what other processes left when asked)."""

    index: int
    name: str
    free: int
    total: int


def available_cores() -> int:
    """The cores this process may use: its CPU affinity (cgroups, SLURM, taskset), at most ``OMP_NUM_THREADS`` when
    that is set (a scheduler's or a test harness's statement of this process tree's share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = _omp_threads()
    return max(1, min(cores, limit)) if limit is not None else max(1, cores)


def _omp_threads() -> int | None:
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return int(limit) if limit.isdigit() and int(limit) > 0 else None


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, this one included once it runs); None where unknown (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Torch threads for a process starting now (``threads: auto``): the cores other processes leave idle.

    An OpenMP thread waits at every barrier for the others, so a thread on a core another busy process holds slows
    every step (17x measured, BENCHMARKS.md): each process of the load (rounded) takes one core away; at least 1.
    Where ``OMP_NUM_THREADS`` is set (and ``cores`` not given), a scheduler or a test harness has stated this process
    tree's share already: that share, whatever the load.
    """
    if cores is None and _omp_threads() is not None:
        return available_cores()
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    busy = 0 if load is None else int(load + 0.5)
    return max(1, min(cores, cores - busy))


def available_memory(root: Path | None = None) -> int | None:
    """Bytes new allocations can still take: Linux's MemAvailable, capped by what the tightest cgroup limit (v1 or v2)
    above this process leaves; None where neither is known."""
    root = ROOT if root is None else root
    known = [left for left in (_meminfo_available(root), _cgroup_left(root)) if left is not None]
    return min(known) if known else None


def _meminfo_available(root: Path) -> int | None:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left(root: Path) -> int | None:
    """Limit minus usage of this process's memory cgroup and of each cgroup above it (the smallest is binding)."""
    cgroups = root / "sys/fs/cgroup"
    lefts = []
    for directory, limit_file, usage_file in _cgroup_dirs(root, cgroups):
        try:
            limit = (directory / limit_file).read_text().strip()
            if limit != "max" and int(limit) < NO_LIMIT:
                lefts.append(max(0, int(limit) - int((directory / usage_file).read_text())))
        except (OSError, ValueError):
            continue
    return min(lefts) if lefts else None


def _cgroup_dirs(root: Path, cgroups: Path) -> list[tuple[Path, str, str]]:
    """(directory, limit file, usage file) from this process's own cgroup up to the hierarchy's root, v2 and v1."""
    own = {"v2": "/", "v1": "/"}
    try:
        for line in (root / "proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                own["v2"] = path
            elif "memory" in controllers.split(","):
                own["v1"] = path
    except (OSError, ValueError):
        pass  # no /proc/self/cgroup: the hierarchy's root only (as inside a container's cgroup namespace)
    found = []
    for version, base, limit_file, usage_file in (
        ("v2", cgroups, "memory.max", "memory.current"),
        ("v1", cgroups / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        directory = base / own[version].strip("/")
        while True:  # the parts of the path mounted here (a sandbox may mount only the hierarchy's upper levels)
            if directory.is_dir():
                found.append((directory, limit_file, usage_file))
            if directory == base:
                break
            directory = directory.parent
    return found


def _cuda() -> ModuleType | None:
    """torch.cuda, or None where no GPU driver's device node exists (``GPU_DEVICE_NODES``), without importing torch."""
    if not any((ROOT / node).exists() for node in GPU_DEVICE_NODES):
        return None
    import torch

    return torch.cuda


def gpu_count() -> int:
    """The CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies), counted without opening a CUDA context."""
    cuda = _cuda()
    return 0 if cuda is None else cuda.device_count()


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, False without asking torch where no GPU driver is (``GPU_DEVICE_NODES``)."""
    cuda = _cuda()
    return cuda is not None and cuda.is_available()


def gpus() -> list[Gpu]:
    """The CUDA devices this process sees, each with its free memory now; [] without CUDA.

    Asking for free memory opens a CUDA context on each device (some hundred MB of its memory while this process
    lives): a job that needs only the count asks ``gpu_count``.
    """
    cuda = _cuda()
    if cuda is None:
        return []
    inventory = []
    for index in range(cuda.device_count()):
        free, total = cuda.mem_get_info(index)
        inventory.append(Gpu(index=index, name=cuda.get_device_name(index), free=int(free), total=int(total)))
    return inventory
