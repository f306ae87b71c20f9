"""The default launcher of multiruns (conf/hydra/launcher/parallel.yaml): jobs side by side, the machine's cores
shared out between them and, on a GPU host, several jobs per GPU (segsweep.app.parallel), through
hydra-joblib-launcher's worker processes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig

if TYPE_CHECKING:
    from segsweep.app.parallel import Split

log = logging.getLogger(__name__)


class ParallelLauncher(JoblibLauncher):
    """``processes`` (``auto``: ``jobs_per_gpu`` per GPU, else one per core, capped by the jobs and by memory) run the
    jobs, each with its share of the cores as torch threads; with one process the jobs run one after another in this
    process. ``jobs_per_gpu: auto`` measures the first job's GPU memory (app/gpu_footprint.py) and packs as many as
    ``gpu_memory_fraction`` of the free memory holds, at most ``max_jobs_per_gpu``."""

    def __init__(
        self,
        processes: int | str = "auto",
        memory_per_job_gb: float = 2.0,
        jobs_per_gpu: int | str = "auto",
        max_jobs_per_gpu: int = 8,
        gpu_memory_fraction: float = 0.8,
        footprint_timeout_s: float = 300.0,
        **joblib: Any,
    ) -> None:
        from segsweep.app.parallel import check_launcher

        check_launcher(processes, jobs_per_gpu, max_jobs_per_gpu, gpu_memory_fraction)
        super().__init__(**joblib)
        self.processes, self.memory_per_job_gb = processes, memory_per_job_gb
        self.jobs_per_gpu, self.max_jobs_per_gpu = jobs_per_gpu, max_jobs_per_gpu
        self.gpu_memory_fraction, self.footprint_timeout_s = gpu_memory_fraction, footprint_timeout_s
        self._early: Any = None  # the thread starting the workers (setup)

    def setup(self, *, config: DictConfig, **kwargs: Any) -> None:
        super().setup(config=config, **kwargs)
        from segsweep.app.workers import start_early  # the workers start while Hydra composes every job's config

        self._early = start_early(config, self.joblib, self.processes, self.memory_per_job_gb)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # imported here: Hydra imports every plugin module whenever a Hydra app starts; keep that light
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from segsweep.app.parallel import with_split

        split = self.plan(job_overrides)
        log.info(
            "Launching %d job(s): %s; hydra.launcher.processes=N%s to change",
            len(job_overrides),
            split.describe(),
            " or hydra.launcher.jobs_per_gpu=N" if split.gpus else "",
        )
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        # the launchers below would list the jobs again (and joblib its settings)
        for name in (BasicLauncher.__module__, "hydra_plugins.hydra_joblib_launcher._core"):
            logging.getLogger(name).setLevel(logging.WARNING)
        jobs = [with_split(overrides, split) for overrides in job_overrides]
        if split.processes == 1:  # no worker to start: its imports would only add time
            basic = BasicLauncher()
            basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
            return basic.launch(jobs, initial_job_idx)
        self.joblib["n_jobs"] = split.processes
        from segsweep.app.workers import launch  # joblib's launch, telling when workers idle

        if self._early is not None:  # the workers it started are those the jobs run in
            self._early.join()
        return launch(self, jobs, initial_job_idx)

    def plan(self, job_overrides: Sequence[Sequence[str]]) -> Split:
        """The split of the machine for these jobs, the free memory of the GPUs they get logged."""
        from segsweep import machine
        from segsweep.app.parallel import GIB, plan_jobs_per_gpu, plan_split

        gpus = machine.gpus()
        footprint = None
        # packing is planned only where it can matter: more jobs than GPUs, the processes left to the plan
        if gpus and self.jobs_per_gpu == "auto" and self.processes == "auto" and len(job_overrides) > len(gpus):
            footprint = self._footprint(job_overrides[0])
        jobs_per_gpu = plan_jobs_per_gpu(self.jobs_per_gpu, gpus, footprint, self.gpu_memory_fraction, self.max_jobs_per_gpu)
        split = plan_split(
            len(job_overrides),
            machine.available_cores(),
            len(gpus),
            machine.available_memory(),
            self.memory_per_job_gb,
            self.processes,
            jobs_per_gpu,
            footprint,
        )
        for gpu in gpus[: split.gpus]:  # what other processes already hold on the GPUs the jobs get
            log.info("\tGPU %d (%s): %.1f of %.1f GiB free", gpu.index, gpu.name, gpu.free / GIB, gpu.total / GIB)
        return split

    def _footprint(self, overrides: Sequence[str]) -> int | None:
        """The GPU memory of a job of these overrides, measured; None (one job per GPU) where its trainer does not train
        on one GPU or the probe fails (the jobs then report their own errors)."""
        from segsweep.app import gpu_footprint
        from segsweep.app.launch import one_gpu_trainer

        config = self.job_config(overrides)
        if not one_gpu_trainer(config.trainer):
            log.info("jobs_per_gpu=auto: the jobs do not train on one GPU each; one job per GPU")
            return None
        try:
            measured = gpu_footprint.measure(config, self.footprint_timeout_s)
        except gpu_footprint.FootprintError as error:
            log.warning("jobs_per_gpu=auto: %s; one job per GPU (hydra.launcher.jobs_per_gpu=N to pack N)", error)
            return None
        log.info(
            "jobs_per_gpu=auto: a job holds %.2f GiB on GPU 0 (%.2f GiB allocator peak + %.2f GiB context), measured in %.1f s",
            *(value / 2**30 for value in (measured.bytes, measured.peak_reserved, measured.context)),
            measured.seconds,
        )
        return measured.bytes

    def job_config(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config as its worker composes it (the sweep's config with the job's overrides), ``hydra`` included."""
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
