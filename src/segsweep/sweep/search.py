"""A hyperparameter search (Optuna) in a sweep: its searched parameters, its trials, the top ones, the data of search.png."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.types import ChoiceSweep
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich import box
from rich.table import Table

from segsweep.runs.console import significant
from segsweep.runs.overrides import override_value, shown_value
from segsweep.runs.record import recorded_value, test_metric
from segsweep.sweep.groups import Group, Report
from segsweep.sweep.jobs import MULTIRUN_FILE, Job, swept_keys
from segsweep.sweep.pareto import pareto_front
from segsweep.sweep.stats import nan_to

TOP_K = 10
# what train.py returns to the sweeper when the config does not say (conf/train.yaml's default)
DEFAULT_METRIC = "val/mIoU_best"


@dataclass(frozen=True)
class Param:
    """A searched parameter and its plot axis: log (``tag(log, ...)``), categories (``choice(...)``, not numbers), linear."""

    name: str
    log: bool = False
    categorical: bool = False


@dataclass
class Trial:
    number: int  # in the order the trials started: Optuna's trial number, also across a resumed study
    name: str
    values: dict[str, str]  # searched parameter -> its value as the job's overrides wrote it
    objective: float  # the recorded ``optimized_metric``; NaN when the run has none
    test_miou: float
    status: str  # completed | failed | pruned | unfinished
    scores: list[float] = field(default_factory=list)  # a multi-objective study's recorded metrics, in its order

    @property
    def ranked(self) -> bool:
        return self.status == "completed" and not math.isnan(self.objective)


@dataclass
class Search:
    params: list[Param]
    metric: str
    maximize: bool
    trials: list[Trial]  # by number
    objectives: list[tuple[str, bool]] = field(default_factory=list)  # (metric, maximize) of each objective


@dataclass
class SearchPlot:
    """search.png's data: the ranked trials in order, their objective, the best so far, each parameter's values."""

    metric: str
    numbers: list[int]
    objectives: list[float]
    best: list[float]
    unranked: int  # trials without an objective (failed, unfinished): not drawn
    params: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)  # name -> (linear|log|category, values)


def shown_label(group: Group, separator: str = ",") -> str:
    """The group's label with its floats at 4 significant digits, as job dirs are named (Optuna writes values in full)."""
    return separator.join(f"{key}={shown_value(value)}" for key, value in group.params.items()) or group.label


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _sweep_config(sweep_dir: Path, jobs: Sequence[Job]) -> tuple[DictConfig | None, str | list[str] | None]:
    """The sweeper node and ``optimized_metric``: multirun.yaml's, else a job's .hydra/ (Optuna writes no multirun.yaml)."""
    candidates = [(sweep_dir / MULTIRUN_FILE, sweep_dir / MULTIRUN_FILE)]
    candidates += [(job.path / ".hydra" / "hydra.yaml", job.path / ".hydra" / "config.yaml") for job in jobs]
    for hydra_file, config_file in candidates:
        try:
            hydra = OmegaConf.load(hydra_file)
            config = hydra if config_file == hydra_file else OmegaConf.load(config_file)
            sweeper, metric = OmegaConf.select(hydra, "hydra.sweeper"), OmegaConf.select(config, "optimized_metric")
        except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):  # ValueError: not UTF-8
            continue
        metrics = [str(name) for name in metric] if isinstance(metric, ListConfig) else None if metric is None else str(metric)
        return sweeper if isinstance(sweeper, DictConfig) else None, metrics
    return None, None


def _is_search(sweeper: DictConfig) -> bool:
    """An Optuna sweeper, or any sweeper with searched ``params`` and a ``direction`` to optimize them in."""
    return "optuna" in str(sweeper.get("_target_", "")).lower() or (bool(sweeper.get("params")) and "direction" in sweeper)


def _param(name: str, spec: Any, values: Sequence[str]) -> Param:
    """How a parameter is drawn: as its search space says (log, choice), as categories if its values are not all numbers."""
    # a log axis also needs positive values: a command-line override may have replaced the logged range
    searched = override_value(str(spec)) if spec is not None else None
    numbers = [_number(value) for value in values]
    numeric = all(number is not None for number in numbers)
    log = numeric and "log" in getattr(searched, "tags", ()) and all(number > 0 for number in numbers)
    return Param(name, log=log, categorical=isinstance(searched, ChoiceSweep) or not numeric)


def _status(job: Job) -> str:
    if job.finished:
        return "completed"
    status = (job.metrics or {}).get("status")
    return status if status in ("failed", "pruned") else "unfinished"


def _started(job: Job) -> float:
    """When the job started: the time Hydra wrote its .hydra/overrides.yaml, first thing."""
    # not Hydra's job number: it restarts at 0 in each command that resumes a study
    try:
        return (job.path / ".hydra" / "overrides.yaml").stat().st_mtime
    except OSError:
        return math.inf


def read_search(report: Report) -> Search | None:
    """A searching sweep's (Optuna's) parameters, metric, direction and trials; None for a grid sweep."""
    # the failed jobs include those whose overrides are unreadable, which no group holds
    jobs = list({job.name: job for job in [*(job for group in report.groups for job in group.jobs), *report.failed]}.values())
    sweeper, metric = _sweep_config(report.sweep_dir, jobs)
    if sweeper is None or not _is_search(sweeper):
        return None
    metrics = [metric or DEFAULT_METRIC] if not isinstance(metric, list) else metric
    direction = sweeper.get("direction", "minimize")  # Optuna's default
    directions = [str(direction)] if isinstance(direction, str) else [str(each) for each in direction]
    objectives = [(name, way.lower().endswith("maximize")) for name, way in zip(metrics, directions)]
    specs = dict(sweeper.get("params") or {})
    # a search space given on the command line is not in the sweeper's params: it shows as values that vary
    names = [*specs, *(key for key in swept_keys([job for job in jobs if job.overrides]) if key not in specs)]
    ordered = sorted(jobs, key=lambda job: (_started(job), job.name))
    trials = [
        Trial(
            number=number,
            name=job.name,
            values={name: job.overrides[name] for name in names if name in job.overrides},
            objective=_or_nan(recorded_value(job.metrics, metrics[0]) if job.metrics else None),
            test_miou=test_metric(job.metrics) if job.metrics else math.nan,
            status=_status(job),
            scores=[_or_nan(recorded_value(job.metrics, name) if job.metrics else None) for name in metrics],
        )
        for number, job in enumerate(ordered)
    ]
    params = [_param(name, specs.get(name), [trial.values[name] for trial in trials if name in trial.values]) for name in names]
    return Search(params, metric=metrics[0], maximize=objectives[0][1], trials=trials, objectives=objectives)


def top_trials(search: Search, k: int = TOP_K) -> list[Trial]:
    """The ``k`` best trials by the objective in the study's direction; trials without one (failed, unfinished) last."""
    sign = -1.0 if search.maximize else 1.0
    return sorted(search.trials, key=lambda trial: (not trial.ranked, sign * nan_to(trial.objective, 0.0), trial.number))[:k]


def top_table(search: Search, k: int = TOP_K) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the top trials: trial number, one column per searched parameter, objective, test mIoU, status."""
    header = ["trial", *(param.name for param in search.params), f"objective ({search.metric})", "test mIoU", "status"]
    rows = [
        [
            str(trial.number),
            *(shown_value(trial.values[param.name]) if param.name in trial.values else "-" for param in search.params),
            significant(trial.objective) if trial.ranked else "-",  # the study counted no value for it
            significant(trial.test_miou),
            trial.status,
        ]
        for trial in top_trials(search, k)
    ]
    return header, rows


def _is_best(search: Search, row: int) -> bool:
    """The row of the top trials table that holds the best trial: the first, if any trial has an objective."""
    return row == 0 and any(trial.ranked for trial in search.trials)


def markdown_section(search: Search, k: int = TOP_K) -> list[str]:
    """report.md's "Top trials": what was searched, then the top trials table, the best in bold."""
    header, rows = top_table(search, k)
    axes = ", ".join(f"`{param.name}`" + (" (log)" if param.log else "") for param in search.params)
    direction = "highest" if search.maximize else "lowest"
    lines = [
        "## Top trials",
        "",
        f"A hyperparameter search over {axes}: the first {len(rows)} of its {len(search.trials)} trials ranked by "
        f"`{search.metric}` ({direction} first; failed, pruned or unfinished trials last), numbered in the order they started.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for index, row in enumerate(rows):
        cells = [cell.replace("|", "\\|") for cell in row]
        if _is_best(search, index):
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    pruned = [trial for trial in search.trials if trial.status == "pruned"]
    if pruned:  # stopped early by the study's pruner: below the others at the same epoch, not failures
        lines += [
            "",
            f"Pruned (stopped early by the search's pruner): {len(pruned)} of {len(search.trials)} trials, "
            + ", ".join(f"{trial.number} (`{trial.name}`)" for trial in pruned)
            + ".",
        ]
    return [*lines, *pareto_section(search)]


def pareto_section(search: Search) -> list[str]:
    """report.md's "Pareto front" of a multi-objective search: the completed trials no other beats on every objective."""
    if len(search.objectives) < 2:
        return []
    scored = [trial for trial in search.trials if trial.status == "completed" and not any(map(math.isnan, trial.scores))]
    front = [scored[i] for i in pareto_front([trial.scores for trial in scored], [up for _, up in search.objectives])]
    names = [f"{name} ({'max' if up else 'min'})" for name, up in search.objectives]
    header = ["trial", *(param.name for param in search.params), *names]
    lines = [
        "",
        "## Pareto front",
        "",
        f"The {len(front)} of {len(scored)} completed trials that no other trial beats on every objective.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for trial in front:
        cells = [str(trial.number), *(shown_value(trial.values.get(param.name, "-")) for param in search.params)]
        lines.append("| " + " | ".join([*cells, *(significant(score) for score in trial.scores)]) + " |")
    return lines


def rich_top_trials(search: Search, k: int = TOP_K) -> Table:
    """The console's top trials table, the best in bold green."""
    header, rows = top_table(search, k)
    direction = "highest" if search.maximize else "lowest"
    table = Table(title=f"Top trials by {search.metric} ({direction} first)", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in header:
        table.add_column(name, justify="left" if name == "status" else "right")
    for index, row in enumerate(rows):
        table.add_row(*row, style="bold green" if _is_best(search, index) else None)
    return table


def plot_data(search: Search) -> SearchPlot | None:
    """search.png's data; None when no trial has an objective."""
    ranked = [trial for trial in search.trials if trial.ranked]
    if not ranked:
        return None
    objectives = [trial.objective for trial in ranked]
    best = list(accumulate(objectives, max if search.maximize else min))
    plot = SearchPlot(search.metric, [trial.number for trial in ranked], objectives, best, len(search.trials) - len(ranked))
    for param in search.params:
        values = [trial.values.get(param.name) for trial in ranked]
        if param.categorical:
            plot.params[param.name] = ("category", [shown_value(value) if value is not None else "-" for value in values])
        else:
            plot.params[param.name] = ("log" if param.log else "linear", [_number(value or "nan") for value in values])
    return plot


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
