"""Hydra callbacks of a multirun: the sweep dir made before the sweeper needs it, one console line per finished job.

The jobs the sweep's report found unfinished are kept here too, for the command's exit code.

(The third, ``report.SweepReportCallback``, writes the report when the multirun ends: it lives with the report it
writes, in the entry-point layer, because the report loads models. Lightning's callbacks are in ``runs/callbacks/``.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from segsweep.runs.console import significant
from segsweep.runs.record import RecordError, load_record, record_path

# The jobs of this process's multirun that did not finish, as its report found them: Hydra drops what callbacks
# return, and the command's exit code (app/preflight.checked_command) must say that jobs failed.
_UNFINISHED: list[str] = []


def sweep_unfinished(names: list[str]) -> None:
    """The report of this process's multirun found these jobs unfinished (failed or never started)."""
    _UNFINISHED[:] = names


def unfinished_jobs() -> list[str]:
    """The jobs the report of this process's multirun found unfinished; [] before a report or when all finished."""
    return list(_UNFINISHED)


class MakeSweepDir(Callback):
    """Creates the sweep dir when a multirun starts: the Optuna sweeper opens its sqlite study
    there before any job has run (and so before Hydra itself creates the directory)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)


class JobLine(Callback):
    """One console line per finished multirun job: its number and name, test mIoU, time and status (its metrics.json)."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        try:
            record = load_record(record_path(run_dir))
        except (OSError, RecordError):
            record = {"status": "failed before it wrote metrics.json"}
        test_miou = (record.get("test") or {}).get("test/mIoU", float("nan"))
        print(
            f"#{config.hydra.job.num} {run_dir.name}  test mIoU {significant(test_miou)}  "
            f"{time.perf_counter() - self._started:.0f} s  {record.get('status', 'unknown')}",
            flush=True,
        )
