"""How one job adapts to where it runs (a multirun, a GPU slot per process, SLURM), and the packages of its launcher."""

from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from segsweep.app.gpu_slots import claim_gpu

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
        # Parallel jobs on a GPU host: each on its process's GPU instead of all of them on GPU 0.
        if multirun and gpu is not None and one_gpu_trainer(trainer):
            trainer.devices = [gpu]
            log.info("job pinned to GPU %d", gpu)


def one_gpu_trainer(trainer: DictConfig) -> bool:
    """Whether these trainer settings train on one GPU where there is one (the jobs a launcher may pack on GPUs)."""
    return trainer.get("accelerator") in ("gpu", "cuda", "auto") and trainer.get("devices") in (1, "1")


def trainer_plugins(launcher: str) -> list[Any]:
    """Under the submitit launcher, submitit owns requeue on timeout; Lightning must not requeue too."""
    # imported here, as machine below: preflight imports this module in a multirun's launching process, which runs no
    # job and needs no torch (BENCHMARKS.md, the default sweep's fixed costs)
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if "submitit" in launcher.lower() and SLURMEnvironment.detect() else []


def _jobs_per_gpu() -> int:
    """The processes per GPU the parallel launcher planned (it passes them to every job); 1 under other launchers."""
    planned = HydraConfig.get().launcher.get("jobs_per_gpu", 1) if HydraConfig.initialized() else 1
    return planned if isinstance(planned, int) and planned >= 1 else 1


def adapt_to_launcher(cfg: DictConfig) -> list[Any]:
    """Apply ``adapt_trainer`` to this job; returns the extra Trainer plugins it needs. In a multirun on a GPU host,
    a job training on one GPU runs on its process's claimed slot's GPU (also with one GPU: the slot says which of the
    jobs sharing it this is)."""
    from segsweep import machine

    multirun, gpu_count = in_multirun(), machine.gpu_count()
    gpu = None
    if multirun and gpu_count >= 1 and one_gpu_trainer(cfg.trainer):
        claimed = claim_gpu(gpu_count, _jobs_per_gpu())
        gpu = job_number() % gpu_count if claimed is None else claimed[0]
    adapt_trainer(cfg.trainer, multirun, gpu)
    return trainer_plugins(launcher_target())
