"""A run directory across commands: where it is, its first command's Hydra records kept, later commands told apart.

Hydra writes ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` into the run dir before the task function
runs. ``hydra.output_subdir`` resolves through ``hydra_records`` below: the first command of a run dir gets ``.hydra``,
every later command (a resume, a repeat) ``.hydra/resumes/<UTC time>``, so the run's own records are never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

RECORDS = ".hydra"
LATER_RECORDS = f"{RECORDS}/resumes"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


@dataclass(frozen=True)
class JobDir:
    """What this process's command found in its run dir when Hydra set it up."""

    later: bool  # the dir already held a run's saved config: this command continues or repeats that run
    fresh: bool  # this command created the dir: nothing in it but the (still empty) job log
    records: str  # where Hydra wrote this command's records, relative to the dir
    empty_logs: tuple[str, ...] = ()  # job logs that were empty when the command began: nothing in them predates it


# Filled by the resolver, which Hydra calls in the process that runs the job (also under parallel launchers).
_JOBS: dict[str, JobDir] = {}


def run_dir(task_name: str, ckpt_path: str | None, default: str) -> str:
    """Resolver of ``hydra.run.dir``: training given a run directory as ``ckpt_path`` continues it in place; anything
    else gets a new dir (eval and predict read a run dir but never write into it)."""
    return ckpt_path if task_name == "train" and ckpt_path and Path(ckpt_path).is_dir() else default


def has_run_records(run_dir: Path) -> bool:
    """Whether a command's Hydra records are all in ``run_dir/.hydra``. Hydra writes config.yaml, hydra.yaml and then
    overrides.yaml, not atomically: a command killed while writing them (a sweep's worker killed) never began its
    job, and what it left is not a run to continue."""
    records = run_dir / RECORDS
    return all((records / name).is_file() and (records / name).stat().st_size > 0 for name in HYDRA_FILES)


def hydra_records(output_dir: str) -> str:
    """Resolver of ``hydra.output_subdir`` (registered with ``use_cache``: Hydra reads the key twice)."""
    run = Path(output_dir)
    later = has_run_records(run)
    # Hydra has made the dir and opened the job log (``<task>.log``) before it asks for this key
    entries = list(run.iterdir()) if run.is_dir() else []
    empty_logs = tuple(entry.name for entry in entries if entry.suffix == ".log" and entry.is_file() and not entry.stat().st_size)
    fresh = not later and len(empty_logs) == len(entries)
    records = f"{LATER_RECORDS}/{datetime.now(timezone.utc):%Y-%m-%d_%H-%M-%S-%f}" if later else RECORDS
    _JOBS[str(output_dir)] = JobDir(later=later, fresh=fresh, records=records, empty_logs=empty_logs)
    return records


def job_dir(output_dir: str | Path) -> JobDir | None:
    """What ``hydra_records`` found for this dir; None outside a Hydra job or when ``hydra.output_subdir`` was overridden."""
    return _JOBS.get(str(output_dir))


def is_later_command(output_dir: str | Path) -> bool:
    job = job_dir(output_dir)
    return job is not None and job.later


def discard_rejected(output_dir: str | Path) -> bool:
    """After a run dir's first command was rejected before any work: remove Hydra's records of it (a later command must
    not take them for a run's), and the dir itself if this command created it; True if the dir is gone.

    Only files this command wrote are deleted, by name (a log only if it was empty when the command began); a later
    command's dir (a run's) is never touched.
    """
    job, run = job_dir(output_dir), Path(output_dir)
    if job is None or job.later or not run.is_dir():
        return False
    records = run / RECORDS
    for name in HYDRA_FILES:
        (records / name).unlink(missing_ok=True)
    if records.is_dir() and not any(records.iterdir()):
        records.rmdir()
    for name in job.empty_logs:
        (run / name).unlink(missing_ok=True)
    if not job.fresh or any(run.iterdir()):  # a dir that was there before, or holds more than Hydra put there
        return False
    run.rmdir()
    return True
