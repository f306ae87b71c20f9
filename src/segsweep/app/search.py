"""The Optuna study loop of segsweep's sweeper (hydra_plugins/segsweep_plugins/optuna_sweeper.py).

Each batch of ``n_jobs`` trials is asked from the study, launched as Hydra jobs through the configured launcher and
told back: COMPLETE with the job's values, PRUNED when the pruner stopped it (segsweep.app.pruning), FAIL when it
raised or returned NaN, None or not a number (the study goes on), until ``n_trials`` ran or more than
``max_failure_rate`` of them failed (then the sweep reports and exits 1). The storage is any Optuna RDB URL
(``sqlite:///...``, PostgreSQL, MySQL) or ``journal:<file>`` (JournalStorage, for a shared file system): several
sweeper processes can share one study, each trial asked once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsweep.app.search_space import SearchSpaceError, grid_choices, parse
from segsweep.runs.record import RecordError, load_record, record_path

log = logging.getLogger(__name__)

JOURNAL = "journal:"
# the job's trial number, given as hydra.job.env_set.SEGSWEEP_TRIAL (not a task override: job names stay as they were)
TRIAL_KEY = "SEGSWEEP_TRIAL"


def open_storage(storage: str | None) -> Any:
    """An Optuna storage from the sweeper's ``storage``: None (in memory), ``journal:<file>`` or an RDB URL."""
    import optuna
    from sqlalchemy.exc import OperationalError

    if storage is None:
        return None
    if storage.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage.removeprefix(JOURNAL)))
    # sqlite locks the whole file per write: wait for another process's write instead of failing at once
    engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite:") else None
    try:
        return optuna.storages.RDBStorage(storage, engine_kwargs=engine)
    except OperationalError as error:  # another process created the tables first: they are there now
        if "already exists" not in str(error):
            raise
        return optuna.storages.RDBStorage(storage, engine_kwargs=engine)


def allowed_failures(max_failure_rate: float, n_trials: int) -> int:
    """How many of this run's trials may fail while its failure rate stays within ``max_failure_rate``."""
    # the small epsilon keeps e.g. 0.3 * 10 from rounding down to 2
    return math.floor(max_failure_rate * n_trials + 1e-9)


def objective(value_of: Callable[[str], float | None], metric: str | Sequence[str] | None) -> Any:
    """What a job returns to the sweeper: ``optimized_metric``'s value, a list of values for a list of metrics, or None."""
    if metric is None:
        return None
    return value_of(metric) if isinstance(metric, str) else [value_of(str(name)) for name in metric]


def _record(job: JobReturn) -> dict[str, Any]:
    """The job's metrics.json: why it failed (train.main records the error and returns NaN), or that it was pruned."""
    try:
        return load_record(record_path(job.hydra_cfg.hydra.runtime.output_dir))
    except (RecordError, AttributeError):  # no record, or a job Hydra returned without its config
        return {}


def trial_outcome(job: JobReturn, objectives: int) -> tuple[list[float] | None, str | None]:
    """A finished job's objective values, or None and why its trial failed (raised, NaN, None or not a number)."""
    if job.status != JobStatus.COMPLETED:
        error = job._return_value  # JobReturn.return_value would re-raise it
        return None, f"{type(error).__name__}: {error}"
    returned = job.return_value
    raw = [returned] if objectives == 1 else list(returned) if isinstance(returned, (list, tuple)) else [returned]
    try:
        values = [float(value) for value in raw]
    except (TypeError, ValueError):
        return None, f"returned {returned!r}, not a number"
    if not all(math.isfinite(value) for value in values):  # train.main returns NaN for a failed run
        return None, _record(job).get("error") or f"returned {returned}"
    if len(values) != objectives:
        return None, f"returned {len(values)} values for {objectives} objectives"
    return values, None


def directions(direction: Any) -> list[str]:
    """The study's directions: one (``maximize``) or a list of them (a multi-objective study)."""
    return [str(direction)] if isinstance(direction, str) else [str(each) for each in direction]


def build_sampler(sweeper: Any, searched: dict[str, Any]) -> tuple[Any, int]:
    """The configured sampler, reseeded per trial (app.trial_seed), and the trials a grid allows (else n_trials)."""
    from segsweep.app.trial_seed import TrialSeededSampler

    config = OmegaConf.to_container(sweeper.sampler, resolve=True) if isinstance(sweeper.sampler, DictConfig) else sweeper.sampler
    extra: dict[str, Any] = {}
    n_trials = int(sweeper.n_trials)
    if str(config.get("_target_", "")).endswith("GridSampler"):
        extra["search_space"] = {name: grid_choices(name, drawn) for name, drawn in searched.items()}
        n_trials = min(n_trials, math.prod(len(values) for values in extra["search_space"].values()))
    return TrialSeededSampler(lambda seed: instantiate(config, seed=seed, **extra), sweeper.seed), n_trials


def _trial_overrides(trial: Any, searched: dict[str, Any], fixed: dict[str, str]) -> tuple[str, ...]:
    for name, drawn in searched.items():
        trial._suggest(name, drawn)  # Trial.suggest_* by distribution, as Optuna's own ask(fixed_distributions) does
    for name, value in fixed.items():
        trial.set_user_attr(name, value)
    params = tuple(f"{name}={value}" for name, value in {**trial.params, **fixed}.items())
    return (*params, f"++hydra.job.env_set.{TRIAL_KEY}={trial.number}")


def run_study(sweeper: Any, arguments: Sequence[str]) -> None:
    """Run ``sweeper.n_trials`` trials of the study (created, or loaded to resume); exits 1 past ``max_failure_rate``."""
    import optuna

    try:
        searched, fixed = parse([*(f"{key}={value}" for key, value in (sweeper.params or {}).items()), *arguments])
        sampler, n_trials = build_sampler(sweeper, searched)
    except SearchSpaceError as error:
        raise SystemExit(f"hydra.sweeper.params: {error}") from None
    wanted = directions(sweeper.direction)
    pruner = instantiate(sweeper.pruner) if sweeper.pruner is not None else None
    if pruner is not None and (sweeper.storage is None or len(wanted) > 1):
        # a job reports to its trial through the storage; Optuna prunes single-objective studies only
        raise SystemExit("hydra.sweeper.pruner: needs hydra.sweeper.storage (a file or a database) and one direction")
    study = optuna.create_study(
        study_name=sweeper.study_name,
        storage=open_storage(sweeper.storage),
        sampler=sampler,
        pruner=pruner,
        directions=wanted,
        load_if_exists=True,
    )
    log.info("Study %s in %s (%s, %s)", study.study_name, sweeper.storage, type(sampler.sampler).__name__, wanted)
    allowed = allowed_failures(sweeper.max_failure_rate, n_trials)
    failed, remaining = 0, n_trials
    while remaining > 0 and failed <= allowed:
        trials = [study.ask() for _ in range(min(remaining, sweeper.n_jobs))]
        jobs = sweeper.launcher.launch(
            [_trial_overrides(trial, searched, fixed) for trial in trials], initial_job_idx=sweeper.job_idx
        )
        sweeper.job_idx += len(jobs)
        for trial, job in zip(trials, jobs):
            values, reason = trial_outcome(job, len(wanted))
            if reason is not None:
                failed += 1
                log.warning("trial %d failed: %s", trial.number, reason)
            pruned = reason is None and _record(job).get("status") == "pruned"
            if pruned:
                log.info("trial %d %s", trial.number, _record(job).get("error"))
            _tell(study, trial, values, pruned)
        remaining -= len(trials)
    _save_results(study, len(wanted), Path(sweeper.sweep_dir))
    if failed > allowed:
        # The sweep ends here: report what ran (Hydra calls on_multirun_end only after a sweep that returns),
        # then one line and exit code 1 (a Hydra exception would add a stack-trace hint).
        sweeper.hydra_context.callbacks.on_multirun_end(config=sweeper.config)
        raise SystemExit(
            f"Optuna study stopped: {failed} of {n_trials - remaining} trials failed, more than "
            f"max_failure_rate={sweeper.max_failure_rate} of n_trials={n_trials} allows ({allowed}); "
            f"see {sweeper.sweep_dir}/report.md"
        )


def _tell(study: Any, trial: Any, values: list[float] | None, pruned: bool) -> None:
    """COMPLETE with values, FAIL without, PRUNED (its last report) if the pruner stopped it; a grid sampler's
    ``study.stop()`` at the last grid point is no error here."""
    import optuna

    State = optuna.trial.TrialState
    state = State.PRUNED if pruned else State.COMPLETE if values is not None else State.FAIL
    try:
        study.tell(trial, values=None if pruned else values, state=state)
    except RuntimeError as error:  # the trial is told already: the sampler's after_trial raised after the storage wrote it
        if "Study.stop" not in str(error):
            raise


def _save_results(study: Any, objectives: int, sweep_dir: Path) -> None:
    """optimization_results.yaml (the best trial, or the Pareto front); nothing when no trial completed."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.error("no trial of study %s completed: no optimization_results.yaml", study.study_name)
        return
    if objectives == 1:
        best = study.best_trial
        results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        log.info("Best parameters: %s; best value: %s", best.params, best.value)
    else:
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
        log.info("Pareto solutions: %d", len(study.best_trials))
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
