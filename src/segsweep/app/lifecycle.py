"""A command's life in its run dir, decided in one place (as lightning-hydra-template's ``task_wrapper`` owns failures).

What a training command does to its run dir (``training_command``):

- **a new run**: a first command into a dir trains there; refused before any work (bad input: a ValueError naming
  the key, a missing file), it prints one line, exits 1 and leaves no run dir behind (``app.rundir.discard_rejected``);
- **continue**: a later command into a run's dir (``resume=true|auto``, ``ckpt_path=<run dir>``, or the same command
  again) continues that run with its saved config (``app.resume``); refused when it would change the experiment, and
  the refusal is recorded beside the run's results (``failed_attempts``);
- **refuse**: a command that is not a resume, into the dir of a completed run: its results stay as they are;
- **skip**: the same in a multirun (a sweep sent again into its own dir): the completed job is skipped and returns
  its recorded metric;
- **record a failure**: a failure after the work began is recorded in metrics.json, then raised with its traceback;
  in a multirun it is logged and the job returns NaN, so that the sweep goes on and its report says why; a SIGTERM
  is recorded as "terminated by SIGTERM" and ends the command with exit code 143.

A failure is recorded by this handler. Before it, the ``MetricsFile`` callback has written a failing fit's history
into the run's record, unless that record is completed; ``runs/record.py``'s rules let the two meet without marking
the exception: a completed record keeps its results and gets one ``failed_attempts`` entry, from here; a failed
record keeps its first error.

Eval and predict write into a new dir of their own and share the first rule (``user_command``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segsweep.app.launch import in_multirun
from segsweep.app.resume import continue_config, resume_selected
from segsweep.app.rundir import discard_rejected, is_later_command
from segsweep.app.search import objective
from segsweep.app.tracking import check_loggers
from segsweep.app.validation import validate
from segsweep.data.contract import SegmentationData
from segsweep.runs.callbacks.metrics_file import failure_text
from segsweep.runs.cli import USER_ERRORS, one_line
from segsweep.runs.console import route_to_run_log
from segsweep.runs.files import NoRoomError
from segsweep.runs.record import completed_record, mark_failed, record_path, recorded_value

log = logging.getLogger(__name__)
T = TypeVar("T")
SIGTERM_EXIT = 128 + 15  # the shell's convention for a process ended by SIGTERM
# fit and test: (the config it trains with, its datamodule, the overrides a continued run applied) -> final metrics
Work = Callable[[DictConfig, SegmentationData, list[str] | None], dict[str, float]]


class CompletedRun(ValueError):
    """A command that is not a resume, into the dir of a completed run: its results stay as they are."""


def _prepare(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, SegmentationData, list[str] | None]:
    """The config this command trains with, its datamodule and, when it continues a run, the overrides it applied.

    A run dir that already holds a run is continued with that run's own config (app.resume). Every problem with the
    input is raised here, before any work.
    """
    later, resuming = is_later_command(run_dir), resume_selected(cfg, run_dir)
    if later and not resuming and completed_record(run_dir) is not None:
        raise CompletedRun(
            f"{run_dir} holds a completed run: continue it with resume=true (e.g. trainer.max_epochs=<more>), "
            "or train into a new hydra.run.dir"
        )
    applied = None
    if later or resuming:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        continued = continue_config(cfg, run_dir, overrides)
        if continued is not None:
            cfg, applied = continued
    check_loggers(cfg)  # a tracker without its package or server: one line before any work
    datamodule = validate(cfg)
    datamodule.setup("fit")  # a folder's files are checked here (bad data: one line, no run dir left behind)
    return cfg, datamodule, applied


def training_command(cfg: DictConfig, work: Work) -> float | None:
    """Run ``work`` in this Hydra job's run dir, by the rules of the module docstring; returns ``cfg.optimized_metric``."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    route_to_run_log(console=not (in_multirun() and cfg.get("quiet_jobs", True)))
    metric = cfg.get("optimized_metric")
    try:
        cfg, datamodule, resume_overrides = _prepare(cfg, run_dir)
    except CompletedRun as error:
        record = completed_record(run_dir)
        if in_multirun() and record is not None:
            log.warning("skipped, already completed: %s", run_dir)
            return objective(lambda name: recorded_value(record, name), metric)
        return _refuse(run_dir, cfg, error)
    except USER_ERRORS as error:
        return _refuse(run_dir, cfg, error)
    completed_before = completed_record(run_dir) is not None
    try:
        metrics = work(cfg, datamodule, resume_overrides)
    except Exception as error:
        record_failure(run_dir, cfg, error, own_run=not completed_before)
        if isinstance(error, NoRoomError) and not in_multirun():  # the machine's state, not a bug: no traceback
            log.error("train failed: %s", error)
            raise SystemExit(1) from None
        if not in_multirun():
            raise
        log.exception("job failed: %s", error)
        return math.nan
    except SIGTERMException as error:
        # Lightning stops at the next batch with a SystemExit without a code, which schedulers would read as success
        record_failure(run_dir, cfg, error, own_run=not completed_before)
        log.error("train failed: terminated by SIGTERM")
        raise SystemExit(SIGTERM_EXIT) from None
    except SystemExit as error:
        # Lightning ends a fit or test stopped by Ctrl-C with exit code 1, after its callbacks saw the interrupt
        if isinstance(error.__context__, KeyboardInterrupt):
            record_failure(run_dir, cfg, error.__context__, own_run=not completed_before)
        raise
    return objective(metrics.get, metric)


def record_failure(run_dir: Path, cfg: DictConfig, error: BaseException, own_run: bool = False) -> None:
    """Record a failure in the run's metrics.json (rank 0 only). ``own_run``: this command completed the run it
    records (its test failed after its fit), so the record turns failed; a run completed by an earlier command keeps
    its status and gets a ``failed_attempts`` entry."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    config = OmegaConf.to_container(cfg, resolve=False)
    try:
        mark_failed(record_path(run_dir), config, failure_text(error), own_run=own_run)
    except NoRoomError as full:  # the disk that failed the run: the record as it was is kept whole
        log.warning("the failure is not recorded in metrics.json: %s", full)


def _refuse(run_dir: Path, cfg: DictConfig, error: BaseException) -> float:
    """Bad input, found before any work: in a multirun the job fails (recorded) and the sweep goes on; else one line
    naming the key and exit code 1, recorded beside a run's results when the dir holds one."""
    if in_multirun():
        record_failure(run_dir, cfg, error)
        log.error("job failed: %s", one_line(error))
        return math.nan
    if is_later_command(run_dir):
        record_failure(run_dir, cfg, error)
    _reject(run_dir, error, lambda line: print(f"train failed: {line}", file=sys.stderr))


def user_command(task: str) -> Callable[[Callable[[DictConfig], T]], Callable[[DictConfig], T]]:
    """Eval's and predict's life, around their Hydra task function: it runs in the job's new dir; a user error
    (``runs.cli.USER_ERRORS``) is one logged line, exit code 1, and no dir left behind."""

    def decorate(task_function: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
        @functools.wraps(task_function)
        def command(cfg: DictConfig) -> T:
            route_to_run_log()
            try:
                return task_function(cfg)
            except USER_ERRORS as error:
                _reject(HydraConfig.get().runtime.output_dir, error, lambda line: log.error("%s failed: %s", task, line))

        return command

    return decorate


def _reject(output_dir: str | Path, error: BaseException, show: Callable[[str], None]) -> NoReturn:
    """End a command whose input was refused before any work: ``show`` one line, no run dir left behind, exit code 1.

    ``SEGSWEEP_TRACEBACK=1`` (or ``HYDRA_FULL_ERROR=1``) also prints the traceback, for debugging.
    """
    discard_rejected(output_dir)
    if os.environ.get("SEGSWEEP_TRACEBACK", "0") != "0" or os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(type(error), error, error.__traceback__)
    show(one_line(error))
    sys.exit(1)
