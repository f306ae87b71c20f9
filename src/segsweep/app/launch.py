"""How one job adapts to where it runs: inside a multirun, on a multi-GPU host, under SLURM; a launcher's packages."""

from __future__ import annotations

import logging
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from pytorch_lightning.plugins.environments import SLURMEnvironment

from segsweep import machine

log = logging.getLogger(__name__)

# a launcher's class (its _target_'s last name) -> its hydra/launcher option, the modules it needs and the optional
# dependency group (pyproject.toml) that installs them
LAUNCHER_PACKAGES = {"RayLauncher": ("ray", ("ray", "hydra_plugins.hydra_ray_launcher"), "cluster")}


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_number() -> int:
    """The job's index in its multirun (0 for a single run, where Hydra leaves it unset)."""
    return int(HydraConfig.get().job.num) if in_multirun() else 0


def launcher_target() -> str:
    return str(HydraConfig.get().launcher.get("_target_", "")) if HydraConfig.initialized() else ""


def missing_launcher_package(target: str) -> str | None:
    """One line naming the extra to install when the launcher ``target`` lacks a package it needs; None when it has them."""
    option, modules, extra = LAUNCHER_PACKAGES.get(target.rsplit(".", 1)[-1], ("", (), ""))
    missing = [module.rsplit(".", 1)[-1].replace("_", "-") for module in modules if find_spec(module) is None]
    if not missing:
        return None
    return f"hydra/launcher={option} needs {' and '.join(missing)}: pip install 'segsweep[{extra}]'"


def adapt_trainer(trainer: DictConfig, multirun: bool, gpu: int | None) -> None:
    """Rewrite trainer settings that cannot work as written where this job runs; ``gpu``: the GPU this job gets on a
    multi-GPU host (None: leave ``devices`` as it is)."""
    with open_dict(trainer):
        # Lightning's `ddp` re-executes the command line in each child: inside a multirun that
        # re-runs the whole sweep. Spawned workers receive the job's already-resolved paths instead.
        if multirun and trainer.get("strategy") == "ddp":
            log.info("trainer.strategy=ddp inside a multirun runs as ddp_spawn (ddp would re-launch the sweep)")
            trainer.strategy = "ddp_spawn"
        # Parallel jobs on one multi-GPU host: one GPU per job instead of all of them on GPU 0.
        gpu_wanted = trainer.get("accelerator") in ("gpu", "cuda", "auto")
        if multirun and gpu is not None and gpu_wanted and trainer.get("devices") in (1, "1"):
            trainer.devices = [gpu]
            log.info("job pinned to GPU %d", gpu)


_claimed: dict[str, Any] = {}  # this process's GPU lock: kept open (held) until the process ends


def claim_gpu(gpu_count: int, lock_dir: Path | None = None) -> int | None:
    """The GPU this process keeps for all its jobs: the first one no other process holds (one lock file per GPU,
    released by the OS when the process ends). Parallel workers so get one GPU each, whichever jobs they are handed;
    None when every GPU is held (more processes than GPUs)."""
    if "gpu" in _claimed:
        return _claimed["gpu"]
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the caller shares GPUs by job number
        return None
    lock_dir = lock_dir or Path(tempfile.gettempdir())
    for gpu in range(gpu_count):
        handle = open(lock_dir / f"segsweep-gpu{gpu}.lock", "a")  # noqa: SIM115 (held open on purpose)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _claimed.update(gpu=gpu, handle=handle)
        return gpu
    return None


def trainer_plugins(launcher: str) -> list[Any]:
    """Under the submitit launcher, submitit owns requeue on timeout; Lightning must not requeue too."""
    return [SLURMEnvironment(auto_requeue=False)] if "submitit" in launcher.lower() and SLURMEnvironment.detect() else []


def adapt_to_launcher(cfg: DictConfig) -> list[Any]:
    """Apply ``adapt_trainer`` to this job; returns the extra Trainer plugins it needs."""
    multirun, gpu_count = in_multirun(), machine.gpu_count()
    gpu = None
    if multirun and gpu_count > 1:
        gpu = claim_gpu(gpu_count)
        gpu = job_number() % gpu_count if gpu is None else gpu
    adapt_trainer(cfg.trainer, multirun, gpu)
    return trainer_plugins(launcher_target())
