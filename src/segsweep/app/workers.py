"""The default launcher's loky workers: started while Hydra checks the jobs' configs, results taken as jobs finish.

Hydra's BasicSweeper composes every job's config in the launching process before it launches them (0.3 s a job);
the workers start and import the job stack meanwhile (``start_early``). ``launch`` runs the jobs as
hydra-joblib-launcher does, but tells the Hydra callbacks when the last jobs leave workers idle for good
(``on_workers_idle``: the report starts its work there). BENCHMARKS.md, the default sweep, has the measurements.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
from joblib import Parallel, delayed
from omegaconf import DictConfig

log = logging.getLogger(__name__)
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
# what every job imports first, and the most of its import time: Lightning (torch, torchmetrics), the run's life
# (validation, the datamodules, the models)
JOB_STACK = ("pytorch_lightning", "segsweep.app.lifecycle", "segsweep.app.build")


def batch_sizes(config: DictConfig) -> list[int] | None:
    """The jobs of each launch BasicSweeper will make (its whole grid, in batches of ``max_batch_size``), from the
    multirun's config as a launcher sees it; None for another sweeper (an Optuna study asks as it goes)."""
    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return [len(batch) for batch in BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))]


def first_batch_size(config: DictConfig) -> int | None:
    """How many jobs BasicSweeper will launch first (``batch_sizes``); None for another sweeper."""
    sizes = batch_sizes(config)
    return None if sizes is None else (sizes[0] if sizes else 0)


def _loky(joblib_cfg: dict[str, Any], processes: int) -> dict[str, Any]:
    """joblib.Parallel's arguments: loky, as hydra-joblib-launcher hard-codes it, and the same executor every time."""
    loky = {**joblib_cfg, "n_jobs": processes, "backend": "loky"}
    process_joblib_cfg(loky)
    return loky


def _import_job_stack() -> None:
    """In a worker: the modules of ``JOB_STACK``, then kept out of the garbage collector's scans (``gc.freeze``)."""
    for name in JOB_STACK:
        importlib.import_module(name)
    # loky collects garbage after every job (its leak check) and Python's full collections recur during a job: each
    # scans every object, and the stack's 470,000 (modules, functions, torch's registries) took 0.27-0.33 s of each
    # gap between jobs here. They live as long as the process, so leaving them out of the scans loses nothing.
    gc.freeze()


def _start(config: DictConfig, joblib_cfg: dict[str, Any], processes: int | str, memory_per_job_gb: float) -> None:
    from segsweep import machine  # torch: imported in this thread, while the launching process composes
    from segsweep.app.parallel import plan_split

    try:
        jobs = first_batch_size(config)
        if not jobs or machine.gpu_count():  # GPU workers claim their GPUs at their first job (app/launch.py)
            return
        split = plan_split(jobs, machine.available_cores(), 0, machine.available_memory(), memory_per_job_gb, processes)
        if split.processes > 1:  # joblib keeps the executor (loky's reusable one) for the jobs' Parallel, same arguments
            Parallel(**_loky(joblib_cfg, split.processes))(delayed(_import_job_stack)() for _ in range(split.processes))
    except Exception:  # the jobs' own Parallel starts the workers then, as without this
        log.warning("the workers were not started early", exc_info=True)


def start_early(
    config: DictConfig, joblib_cfg: dict[str, Any], processes: int | str, memory_per_job_gb: float
) -> threading.Thread:
    """In a thread (join it before ``launch``): as many loky workers as the default launcher will use for the first
    batch (``app.parallel.plan_split``; none on a GPU host or for one process), each importing ``JOB_STACK``."""
    thread = threading.Thread(target=_start, args=(config, dict(joblib_cfg), processes, memory_per_job_gb), daemon=True)
    thread.start()
    return thread


def _numbered(index: int, *job: Any) -> tuple[int, JobReturn]:
    """In a worker: hydra-joblib-launcher's job, returned with its number (results arrive in any order)."""
    return index, execute_job(index, *job)


def _tell_idle(launcher: Any, running: int) -> None:
    """Every Hydra callback with an ``on_workers_idle`` hook: no job is left to start, ``running`` still run."""
    for callback in launcher.hydra_context.callbacks.callbacks:
        hook = getattr(callback, "on_workers_idle", None)
        if hook is None:
            continue
        try:
            hook(config=launcher.config, running=running)
        except Exception:  # a hook that fails must not cost the jobs
            log.warning("%s.on_workers_idle failed", type(callback).__name__, exc_info=True)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """What hydra-joblib-launcher's ``launch`` does (same workers, same jobs, the results in job order), except that
    the results are collected as they finish, and the callbacks are told once when fewer jobs remain than workers."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    workers, state = int(launcher.joblib.get("n_jobs") or 1), Singleton.get_state()
    context, config, task = launcher.hydra_context, launcher.config, launcher.task_function
    jobs = (
        delayed(_numbered)(initial_job_idx + offset, overrides, context, config, task, state)
        for offset, overrides in enumerate(job_overrides)
    )
    results: dict[int, JobReturn] = {}
    told = False
    for index, result in Parallel(**_loky(launcher.joblib, workers), return_as="generator_unordered")(jobs):
        results[index] = result
        running = len(job_overrides) - len(results)
        if not told and 0 < running < workers:
            told = True
            _tell_idle(launcher, running)
    sizes = batch_sizes(config)
    if sizes is not None and initial_job_idx + len(job_overrides) >= sum(sizes):
        _release_workers()
    return [results[initial_job_idx + offset] for offset in range(len(job_overrides))]


def _release_workers() -> None:
    """The sweep's last jobs are done: the workers exit now, while the report is written, rather than at this
    process's exit, which waited 1.5-1.9 s for them (BENCHMARKS.md, the default sweep)."""
    # the reusable executor joblib ran the jobs in; loky keeps it in a module global and offers no getter that could
    # not start a new one (get_reusable_executor with other arguments replaces it)
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=False)
