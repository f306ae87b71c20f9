"""Reading a multirun dir: its jobs, their overrides and run records, which keys were swept, and grouping."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segsweep.runs.image_counts import ImageCountsError, read_image_counts
from segsweep.runs.record import RecordError, load_record, record_path

log = logging.getLogger(__name__)
SEED_KEY = "seed"
FOLD_KEY = "data.fold"
# what a group pools over: runs differing only in these replicate one setting (a k-fold sweep's fold beside the seed)
REPLICATE_KEYS = (SEED_KEY, FOLD_KEY)
# a grid this large is a crafted or mistyped multirun.yaml (range(0,100000000)): expanding it takes minutes and GBs
MAX_EXPECTED_JOBS = 10_000
MULTIRUN_FILE = "multirun.yaml"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_OVERRIDE = re.compile(r"^(?P<prefix>~|\+\+|\+)?(?P<key>[^=]+)(?:=(?P<value>.*))?$", re.DOTALL)


class ReportError(ValueError):
    """The sweep dir cannot be reported on (missing, or holds no jobs)."""


@dataclass
class Job:
    name: str
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    # why the job did not finish; None when it completed with test metrics
    error: str | None = None
    # the per-test-image counts (runs/image_counts.py), checked; None when the run has none
    image_counts: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.error is None

    @property
    def pruned(self) -> bool:
        """Stopped early by a search's pruner (app.pruning): not finished, and not a failure either."""
        return (self.metrics or {}).get("status") == "pruned"

    @property
    def history(self) -> list[dict[str, Any]]:
        return sorted((self.metrics or {}).get("history") or [], key=lambda entry: entry.get("epoch", 0))

    @property
    def classes(self) -> dict[str, Any] | None:
        """The dataset's classes as the run recorded them (names, colours, ignore index, train pixel counts)."""
        classes = (self.metrics or {}).get("classes")
        return classes if isinstance(classes, dict) else None

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoints" / "best.ckpt").is_file()


def parse_override(override: str) -> tuple[str, str]:
    """``key=value`` (also ``+key=value``, ``~key``) -> (key, value)."""
    match = _OVERRIDE.match(override.strip())
    if not match:
        return override, ""
    value = match["value"] if match["value"] is not None else ""
    return match["key"].strip(), ("~" + value if match["prefix"] == "~" else value)


def read_job(path: Path, name: str) -> Job:
    """One job dir: its overrides and metrics.json, with the reason it did not finish if so."""
    job = Job(name=name, path=path, overrides={}, metrics=None)
    try:
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: not UTF-8
        job.error = f".hydra/overrides.yaml unreadable ({type(error).__name__})"
        return job
    if not (isinstance(overrides, list) and all(isinstance(item, str) for item in overrides)):
        job.error = f".hydra/overrides.yaml: expected a list of overrides, got {type(overrides).__name__}"
        return job
    job.overrides = dict(parse_override(item) for item in overrides)
    path_of_record = record_path(path)
    if not path_of_record.is_file():
        job.error = "no metrics.json (killed, or still running)"
        return job
    try:
        job.metrics = load_record(path_of_record)
    except RecordError as error:
        job.error = f"metrics.json unreadable ({str(error).removeprefix(f'{path_of_record}: ')})"
        return job
    status = job.metrics.get("status")
    if status == "fitted":
        job.error = "no test metrics (killed before or during testing)"
    elif status != "completed":
        job.error = f"{status}: {job.metrics.get('error') or 'no error recorded'}"
    elif not isinstance((job.metrics.get("test") or {}).get("test/mIoU"), (int, float)):
        job.error = "no test metrics (killed before or during testing)"
    else:
        try:
            job.image_counts = read_image_counts(path)
        except ImageCountsError as error:
            job.error = str(error)
    return job


def expected_jobs(sweep_dir: Path) -> list[tuple[str, list[str]]]:
    """The jobs a grid sweep was asked for (name, overrides), expanded from its multirun.yaml by Hydra's own parser and
    BasicSweeper; empty when the file is missing or unreadable, or the sweeper is not the basic one (an Optuna study's
    trials are not known in advance)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = OmegaConf.load(sweep_dir / MULTIRUN_FILE).hydra
        if hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return []
        params = [f"{key}={value}" for key, value in (hydra.sweeper.get("params") or {}).items()]
        parser = OverridesParser.create()
        parsed = parser.parse_overrides([*params, *hydra.overrides.task])
        if _sweep_size(parsed) > MAX_EXPECTED_JOBS:
            log.warning(
                "%s: sweeps more than %d jobs; those that never started are not listed",
                sweep_dir / MULTIRUN_FILE,
                MAX_EXPECTED_JOBS,
            )
            return []
        batches = BasicSweeper.split_arguments(parsed, None)
        naming = hydra.job.config.override_dirname
        return [
            # named as conf/hydra/default.yaml's hydra.sweep.subdir names a job dir: its overrides, else its number
            (
                get_overrides_dirname(parser.parse_overrides(job), list(naming.exclude_keys), naming.item_sep, naming.kv_sep)
                or str(number),
                list(job),
            )
            for number, job in enumerate(batches[0])
        ]
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException, HydraException, AttributeError, TypeError):
        return []  # the report of the jobs that exist, rather than none


def _sweep_size(overrides: Sequence[Any]) -> int:
    """How many jobs the parsed overrides sweep, counted only up to just past ``MAX_EXPECTED_JOBS``."""
    size = 1
    for override in overrides:
        if override.is_sweep_override():
            size *= sum(1 for _ in islice(override.sweep_iterator(), MAX_EXPECTED_JOBS + 1))
        if size > MAX_EXPECTED_JOBS:
            break
    return size


def never_started(sweep_dir: Path, jobs: Sequence[Job]) -> list[Job]:
    """A Job (error "never started") for each job the sweep expected but whose dir holds no job with its overrides."""
    present, names = [job.overrides.items() for job in jobs], {job.name for job in jobs}
    missing = []
    for name, overrides in expected_jobs(sweep_dir):
        wanted = dict(parse_override(item) for item in overrides)
        # a job's own records may hold more overrides than the sweep's (the launcher adds threads=<n>)
        if not any(wanted.items() <= items for items in present) and name not in names:
            missing.append(Job(name=name, path=sweep_dir / name, overrides=wanted, metrics=None, error="never started"))
    return missing


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every Hydra job under the sweep dir (a dir with ``.hydra/overrides.yaml``), and every job of the sweep that never
    started (from its multirun.yaml), in natural name order."""
    if not sweep_dir.exists():
        raise ReportError(f"{sweep_dir}: no such directory")
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: not a directory")
    jobs = [
        read_job(marker.parent.parent, marker.parent.parent.relative_to(sweep_dir).as_posix())
        for marker in sweep_dir.rglob(".hydra/overrides.yaml")
    ]
    if not jobs:
        raise ReportError(f"{sweep_dir}: no Hydra jobs found (no <job>/.hydra/overrides.yaml); is it a multirun dir?")
    for job in jobs:
        if job.name == ".":
            job.name = sweep_dir.name
    return sorted([*jobs, *never_started(sweep_dir, jobs)], key=lambda job: _natural(job.name))


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs across jobs (a key some jobs lack counts as differing)."""
    keys = sorted({key for job in jobs for key in job.overrides})
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def group_jobs(jobs: Sequence[Job], keys: Sequence[str]) -> dict[str, list[Job]]:
    """Jobs by their values of ``keys`` (label ``k=v,k2=v2``; ``all jobs`` when no key is swept)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        label = ",".join(f"{key}={job.overrides[key]}" if key in job.overrides else f"{key}=<default>" for key in keys)
        groups.setdefault(label or "all jobs", []).append(job)
    return groups


def replicate_of(job: Job) -> str:
    """The job's replicate in its group, the key comparisons pair by: its seed, and its fold in a k-fold sweep."""
    seed = job.overrides.get(SEED_KEY) or str(((job.metrics or {}).get("config") or {}).get(SEED_KEY, job.name))
    return seed if FOLD_KEY not in job.overrides else f"{SEED_KEY}={seed},{FOLD_KEY}={job.overrides[FOLD_KEY]}"


def replicates_done(jobs: Sequence[Job]) -> str:
    """``finished/all``, and ``(S seeds x F folds)`` when the jobs are folds of a k-fold sweep."""
    done = [job for job in jobs if job.finished]
    folds = {job.overrides[FOLD_KEY] for job in done if FOLD_KEY in job.overrides}
    if not folds:
        return f"{len(done)}/{len(jobs)}"
    seeds = {job.overrides.get(SEED_KEY) for job in done}
    plural = "" if len(seeds) == 1 else "s"
    return f"{len(done)}/{len(jobs)} ({len(seeds)} seed{plural} x {len(folds)} folds)"
