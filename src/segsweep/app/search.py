"""Optuna search for conf/hparams_search: a resumable sampler seed, and a study loop that survives failed trials.

hydra-optuna-sweeper 1.3 (pinned with optuna 2.10) crashes when a job returns NaN (it tells the study COMPLETE with
NaN, then FAIL with values), leaving the trial RUNNING; it also applies ``max_failure_rate`` per batch of ``n_jobs``
trials, so with ``n_jobs=1`` one failure ends the study. ``run_study`` replaces its loop and keeps everything else
(search space, sampler, storage, results file); ``hydra_plugins.segsweep_plugins`` is the plugin that calls it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from segsweep.runs.record import RecordError, load_record, record_path

log = logging.getLogger(__name__)


def existing_trials(storage: str, study_name: str) -> int:
    """Trials already in the study (0 if its sqlite file or the study does not exist yet)."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return 0
    import optuna  # only sweeps with the Optuna sweeper pay for this import

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        return 0


def resumable_seed(seed: int, storage: str, study_name: str) -> int:
    """The sampler's seed plus the trials so far: a resumed study draws new points instead of
    replaying the first ones of its earlier runs, and stays reproducible."""
    return int(seed) + existing_trials(storage, study_name)


def allowed_failures(max_failure_rate: float, n_trials: int) -> int:
    """How many of this run's trials may fail while its failure rate stays within ``max_failure_rate``."""
    # the small epsilon keeps e.g. 0.3 * 10 from rounding down to 2
    return math.floor(max_failure_rate * n_trials + 1e-9)


def _recorded_error(job: JobReturn) -> str | None:
    """Why a job failed, as its metrics.json recorded it (train.main records the error and returns NaN)."""
    try:
        record = load_record(record_path(job.hydra_cfg.hydra.runtime.output_dir))
    except (RecordError, AttributeError):  # no record, or a job Hydra returned without its config
        return None
    return record.get("error")


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
    if len(values) != objectives:
        return None, f"returned {len(values)} values for {objectives} objectives"
    if not all(math.isfinite(value) for value in values):
        return None, _recorded_error(job) or f"returned {returned}"
    return values, None


def _search_space(sweeper: Any, arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweeper's distributions and fixed parameters, as hydra-optuna-sweeper builds them (GridSampler included)."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    sweeper._process_searchspace_config()
    distributions, fixed = create_params_from_overrides([*sweeper._parse_sweeper_params_config(), *arguments])
    distributions = {**(sweeper.search_space_distributions or {}), **distributions}
    for name in fixed:
        distributions.pop(name, None)
    if getattr(sweeper.sampler, "func", None) is optuna.samplers.GridSampler:
        grid = {name: sweeper._to_grid_sampler_choices(distribution) for name, distribution in distributions.items()}
        sweeper.sampler = sweeper.sampler(grid)
        sweeper.n_trials = min(sweeper.n_trials, math.prod(len(choices) for choices in grid.values()))
    return distributions, fixed


def run_study(sweeper: Any, arguments: Sequence[str]) -> None:
    """hydra-optuna-sweeper's ``sweep`` with failed trials told FAIL and ``max_failure_rate`` applied to the whole run:
    once more than that share of its ``n_trials`` trials have failed, the sweep reports and exits (code 1)."""
    import optuna

    distributions, fixed = _search_space(sweeper, arguments)
    directions = sweeper._get_directions()
    study = optuna.create_study(
        study_name=sweeper.study_name,
        storage=sweeper.storage,
        sampler=sweeper.sampler,
        directions=directions,
        load_if_exists=True,
    )
    log.info("Study %s in %s (%s, %s)", study.study_name, sweeper.storage, type(study.sampler).__name__, directions)
    allowed = allowed_failures(sweeper.max_failure_rate, sweeper.n_trials)
    failed, remaining = 0, sweeper.n_trials
    while remaining > 0 and failed <= allowed:
        trials = [study.ask() for _ in range(min(remaining, sweeper.n_jobs))]
        overrides = sweeper._configure_trials(trials, distributions, fixed)
        jobs = sweeper.launcher.launch(overrides, initial_job_idx=sweeper.job_idx)
        sweeper.job_idx += len(jobs)
        for trial, job in zip(trials, jobs):
            values, reason = trial_outcome(job, len(directions))
            if reason is None:
                study.tell(trial, values=values)
                continue
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failed += 1
            log.warning("trial %d failed: %s", trial.number, reason)
        remaining -= len(trials)
    _save_results(study, len(directions), Path(sweeper.sweep_dir))
    if failed > allowed:
        # The sweep ends here: report what ran (Hydra calls on_multirun_end only after a sweep that returns),
        # then one line and exit code 1 (a Hydra exception would add a stack-trace hint).
        sweeper.hydra_context.callbacks.on_multirun_end(config=sweeper.config)
        raise SystemExit(
            f"Optuna study stopped: {failed} of {sweeper.n_trials - remaining} trials failed, more than "
            f"max_failure_rate={sweeper.max_failure_rate} of n_trials={sweeper.n_trials} allows ({allowed}); "
            f"see {sweeper.sweep_dir}/report.md"
        )


def _save_results(study: Any, objectives: int, sweep_dir: Path) -> None:
    """optimization_results.yaml as hydra-optuna-sweeper writes it; nothing when no trial completed."""
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
