"""hydra/launcher=ray (conf/hydra/launcher/ray.yaml): a multirun's jobs as tasks on a Ray cluster (hydra-ray-launcher).

Each job gets ``ray.remote.num_cpus`` CPUs as its torch threads (``threads=<n>``, as the parallel launcher passes its
share) and runs in the directory the sweep was launched from, with its command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, filter_overrides
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class AsLaunched:
    """The task function run in the directory the sweep was launched from (where the node has it, as on a shared
    file system) and with its command line: relative paths (data.root, paths.log_dir) mean on a Ray worker what
    they mean for the other launchers, and the manifest records the sweep's command, not Ray's worker's."""

    def __init__(self, task_function: TaskFunction, directory: str, argv: Sequence[str]) -> None:
        self.task_function, self.directory, self.argv = task_function, directory, list(argv)

    def __call__(self, cfg: DictConfig) -> Any:
        before, argv = os.getcwd(), sys.argv
        if Path(self.directory).is_dir():
            os.chdir(self.directory)
        else:
            log.warning("%s does not exist on this node: relative paths are read from %s", self.directory, before)
        sys.argv = self.argv
        try:
            return self.task_function(cfg)
        finally:
            os.chdir(before)
            sys.argv = argv


class RayLauncher(Launcher):
    """hydra-ray-launcher's launcher, its package imported only when a sweep launches (Hydra imports every plugin
    module whenever a Hydra app starts): ``ray.init`` and ``ray.remote`` are its keys, passed to Ray as they are."""

    def __init__(self, ray: DictConfig) -> None:
        self.ray = ray
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from segsweep.app.launch import missing_launcher_package
        from segsweep.app.parallel import with_threads

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        missing = missing_launcher_package(str(self.config.hydra.launcher.get("_target_", "")))
        if missing is not None:
            raise CompactHydraException(missing)
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginLauncher

        threads = max(1, int(self.ray.remote.get("num_cpus") or 1))  # Ray's own default: one CPU a task
        address = self.ray.init.get("address")
        log.info(
            "Launching %d job(s) on Ray (%s), %d CPU(s) each as torch threads; hydra.launcher.ray.remote.num_cpus=N to change",
            len(job_overrides),
            f"address={address}" if address else "a new local Ray instance",
            threads,
        )
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        # the plugin would list the jobs again, and its ray.init settings
        for name in ("hydra_plugins.hydra_ray_launcher._core", "hydra_plugins.hydra_ray_launcher._launcher_util"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # a worker's directory is Ray's, not this one: the job dirs are named by their absolute path
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        quoted = "'" + str(sweep_dir).replace("'", "\\'") + "'"  # a path may hold ',' or '=' (Hydra's grammar)
        jobs = [[*with_threads(overrides, threads), f"hydra.sweep.dir={quoted}"] for overrides in job_overrides]
        plugin = PluginLauncher(ray=self.ray)
        task = AsLaunched(self.task_function, os.getcwd(), sys.argv)
        plugin.setup(hydra_context=self.hydra_context, task_function=task, config=self.config)
        try:
            return plugin.launch(jobs, initial_job_idx)
        except ConnectionError as error:  # ray.init found no cluster at the address
            hint = "`ray start --head` starts a cluster here; hydra.launcher.ray.init.address=null, a Ray of this sweep's own"
            raise CompactHydraException(f"hydra.launcher.ray.init.address={address}: {_first_line(error)} ({hint})") from None


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
