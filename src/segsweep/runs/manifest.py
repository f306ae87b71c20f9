"""What produced a run: code version, command, packages, device, seed, times."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "tensorboard",
    "segmentation-models-pytorch",
    "timm",
)


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _launch() -> dict[str, Any]:
    """The launcher of this command (``hydra/launcher`` choice), how many jobs it ran side by side and, on GPUs, how
    many of them at most on one GPU (the parallel launcher passes both to every job)."""
    if not HydraConfig.initialized():
        return {"launcher": None, "parallel_processes": None, "jobs_per_gpu": None}
    hydra = HydraConfig.get()
    processes = hydra.launcher.get("processes", hydra.launcher.get("n_jobs"))
    jobs_per_gpu = hydra.launcher.get("jobs_per_gpu")
    return {
        "launcher": hydra.runtime.choices.get("hydra/launcher"),
        "parallel_processes": processes if isinstance(processes, int) else None,
        "jobs_per_gpu": jobs_per_gpu if isinstance(jobs_per_gpu, int) else None,
    }


def manifest(
    seed: int,
    device: str,
    channels_last: bool | None = None,
    fine_tuning: dict[str, Any] | None = None,
    gpu_slot: int | None = None,
) -> dict[str, Any]:
    """The run's provenance, the speed choices it ran with and how its encoder was fine-tuned (the module's
    ``fine_tuning``: lr scale, frozen epochs, input normalisation); ``dirty`` is None outside a git checkout.
    ``gpu``, ``gpu_slot``: the GPU the run trained on and which of the launcher's ``jobs_per_gpu`` slots on it its
    process held (app/gpu_slots.py), None on the CPU or where no slot was claimed."""
    import torch  # here: the run records import this module, and a multirun's launching process needs no torch

    cuda = device.startswith("cuda")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "packages": {package: _version(package) for package in PACKAGES},
        "device": device,
        "cuda": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        "gpu": torch.device(device).index if cuda else None,
        "gpu_slot": gpu_slot if cuda else None,
        # CPU conv reductions depend on the thread count: reruns are bit-identical only at equal counts.
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        # speed choices (BENCHMARKS.md): the memory format changes float rounding, as the thread count does
        "channels_last": channels_last,
        "fine_tuning": fine_tuning,
        **_launch(),
        "seed": seed,
        "start_time": now(),
        "end_time": None,
    }


def with_resume(
    manifest: dict[str, Any], recorded: dict[str, Any] | None, overrides: list[str], from_epoch: int
) -> dict[str, Any]:
    """``manifest`` with this command in its ``resumes``: the entries of the checkpoint's manifest plus those only the
    record has (a resume that trained no epoch), by time, then this one (``from_epoch``: the first epoch it trains,
    counted from 1)."""
    resumes = list(manifest.get("resumes", []))
    resumes += [entry for entry in (recorded or {}).get("resumes", []) if entry not in resumes]
    entry = {"time": now(), "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "overrides": overrides, "from_epoch": from_epoch}
    return {**manifest, "resumes": [*sorted(resumes, key=lambda item: item["time"]), entry]}
