"""GPU slots: the (GPU, slot) a worker process of a multirun holds for its lifetime, through a lock file per slot.

Kept apart from app/launch.py (which adapts a job's trainer to it) so that claiming imports nothing heavy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

_claimed: dict[str, Any] = {}  # this process's GPU slot lock: kept open (held) until the process ends


def claim_gpu(gpu_count: int, jobs_per_gpu: int = 1, lock_dir: Path | None = None) -> tuple[int, int] | None:
    """The (GPU, slot) this process keeps for all its jobs: the first one no other process holds, slot by slot (slot 0
    of every GPU, then slot 1, ...: fewer processes than slots spread over the GPUs), ``jobs_per_gpu`` slots a GPU.
    One lock file a slot, released by the OS when the process ends: parallel workers so get a slot each, whichever
    jobs they are handed, and never more than ``jobs_per_gpu`` of them share a GPU; None when every slot is held."""
    if "gpu" in _claimed:
        return _claimed["gpu"], _claimed["slot"]
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the caller shares GPUs by job number
        return None
    lock_dir = lock_dir or Path(tempfile.gettempdir())
    for slot in range(jobs_per_gpu):
        for gpu in range(gpu_count):
            try:  # another user's lock file (a shared temp dir) cannot be opened: a slot held
                handle = open(lock_dir / f"segsweep-gpu{gpu}-slot{slot}.lock", "a")  # noqa: SIM115 (held open on purpose)
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _claimed.update(gpu=gpu, slot=slot, handle=handle)
            return gpu, slot
    return None


def gpu_slot() -> int | None:
    """The slot of the GPU this process claimed (``claim_gpu``), for the run's manifest; None where it claimed none."""
    return _claimed.get("slot")
