"""The default launcher of multiruns (conf/hydra/launcher/parallel.yaml): jobs side by side, the machine's cores
shared out between them (segsweep.app.parallel), through hydra-joblib-launcher's worker processes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ParallelLauncher(JoblibLauncher):
    """``processes`` (``auto``: one per GPU, else one per core, capped by the jobs and by memory) run the jobs, each
    with its share of the cores as torch threads; with one process the jobs run one after another in this process."""

    def __init__(self, processes: int | str = "auto", memory_per_job_gb: float = 2.0, **joblib: Any) -> None:
        super().__init__(**joblib)
        self.processes, self.memory_per_job_gb = processes, memory_per_job_gb
        self._early: Any = None  # the thread starting the workers (setup)

    def setup(self, *, config: DictConfig, **kwargs: Any) -> None:
        super().setup(config=config, **kwargs)
        from segsweep.app.workers import start_early  # the workers start while Hydra composes every job's config

        self._early = start_early(config, self.joblib, self.processes, self.memory_per_job_gb)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # imported here: Hydra imports every plugin module whenever a Hydra app starts; keep that light
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from segsweep import machine
        from segsweep.app.parallel import GIB, plan_split, with_split

        gpus = machine.gpus()
        split = plan_split(
            len(job_overrides),
            machine.available_cores(),
            len(gpus),
            machine.available_memory(),
            self.memory_per_job_gb,
            self.processes,
        )
        log.info("Launching %d job(s): %s; hydra.launcher.processes=N to change", len(job_overrides), split.describe())
        for gpu in gpus[: split.gpus]:  # what other processes already hold on the GPUs the jobs get
            log.info("\tGPU %d (%s): %.1f of %.1f GiB free", gpu.index, gpu.name, gpu.free / GIB, gpu.total / GIB)
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
