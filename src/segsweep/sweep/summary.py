"""A sweep's summary: jobs grouped by their swept overrides, per-group statistics, the ranking and the headline."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segsweep.runs.image_counts import read_image_counts
from segsweep.sweep.bootstrap import PairedDifference, SeedResult, group_interval, paired_difference, seeds_needed
from segsweep.sweep.jobs import SEED_KEY, Job, find_jobs, group_jobs, parse_override, swept_keys
from segsweep.sweep.stats import convergence_epoch, default_threshold, mean_std, nan_to

SUMMARY_METRICS = {"test/mIoU": "test mIoU", "test/pixel_acc": "pixel acc", "test/boundary_f1": "boundary F1"}


@dataclass
class Group:
    label: str
    params: dict[str, str]
    jobs: list[Job]
    # metric name -> (mean, std) over finished seeds: test/mIoU, test/iou/<class>, ..., converge_epoch, wall_time_s
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    # metric name -> how many finished seeds have a (non-NaN) value: a mean over fewer is marked in the tables
    counts: dict[str, int] = field(default_factory=dict)
    # 95% bootstrap interval of the mean test mIoU, and the paired differences to the best group
    miou_ci: tuple[float, float] = (math.nan, math.nan)
    diff: PairedDifference | None = None
    rare_diff: PairedDifference | None = None
    verdict: str = ""
    converge_epochs: list[int | None] = field(default_factory=list)

    @property
    def finished(self) -> list[Job]:
        return [job for job in self.jobs if job.finished]

    @property
    def never_converged(self) -> int:
        return sum(epoch is None for epoch in self.converge_epochs)

    def mean(self, name: str) -> float:
        return self.stats.get(name, (math.nan, math.nan))[0]


@dataclass
class Report:
    sweep_dir: Path
    swept: list[str]  # swept override keys, seed excluded
    class_names: list[str]
    rare_class: str | None
    threshold: float
    threshold_note: str
    groups: list[Group]  # best test mIoU first
    failed: list[Job]
    headline: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # when the winner is not ahead beyond the uncertainty: seeds a rerun should use, and the command
    seeds_suggested: int | None = None
    rerun_command: str | None = None


def class_names_of(jobs: Sequence[Job]) -> list[str]:
    """Class names in the dataset's order, as the runs recorded them (else those of the ``test/iou/<class>`` metrics)."""
    names = list(
        dict.fromkeys(
            key.removeprefix("test/iou/")
            for job in jobs
            for key in (job.metrics or {}).get("test", {})
            if key.startswith("test/iou/")
        )
    )
    recorded = next((job.classes["names"] for job in jobs if job.classes), [])
    return [name for name in recorded if name in names] + [name for name in names if name not in recorded]


def rarest_class(jobs: Sequence[Job], class_names: Sequence[str]) -> str | None:
    """The class with the fewest training pixels, as the runs recorded them; None if no run recorded its pixel counts."""
    for job in jobs:
        classes = job.classes or {}
        pixels = dict(zip(classes.get("names", []), classes.get("train_pixels", [])))
        candidates = [name for name in class_names if name in pixels]
        if candidates:
            return min(candidates, key=lambda name: pixels[name])
    return None


def summarize(sweep_dir: str | Path, threshold: float | None = None) -> Report:
    """Read every job of the sweep dir and compute the per-group statistics (writes nothing)."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    readable = [job for job in jobs if job.error is None or not job.error.startswith(".hydra")]
    keys = swept_keys(readable)
    finished = [job for job in jobs if job.finished]
    class_names = class_names_of(finished)
    if threshold is None:
        threshold, threshold_note = default_threshold(jobs)
    else:
        threshold_note = "set by hand (--threshold)"
    metric_names = [*SUMMARY_METRICS, *(f"test/iou/{name}" for name in class_names)]
    groups = []
    for label, members in group_jobs(readable, [key for key in keys if key != SEED_KEY]).items():
        group = Group(
            label=label, params={key: members[0].overrides.get(key, "<default>") for key in keys if key != SEED_KEY}, jobs=members
        )
        done = group.finished
        for name in metric_names:
            values = [job.metrics["test"].get(name, math.nan) for job in done]
            group.stats[name] = mean_std(values)
            group.counts[name] = sum(value is not None and not math.isnan(value) for value in values)
        group.converge_epochs = [convergence_epoch(job.history, threshold) if not math.isnan(threshold) else None for job in done]
        group.stats["converge_epoch"] = mean_std([epoch for epoch in group.converge_epochs if epoch is not None])
        group.stats["wall_time_s"] = mean_std([job.history[-1].get("time_s", math.nan) for job in done if job.history])
        groups.append(group)
    groups.sort(key=lambda group: (math.isnan(group.mean("test/mIoU")), -nan_to(group.mean("test/mIoU"), 0.0)))
    report = Report(
        sweep_dir=sweep_dir,
        swept=[key for key in keys if key != SEED_KEY],
        class_names=class_names,
        rare_class=rarest_class(finished, class_names),
        threshold=threshold,
        threshold_note=threshold_note,
        groups=groups,
        failed=[job for job in jobs if not job.finished],
    )
    compare_groups(report)
    report.headline = headline(report)
    return report


def _seed_results(group: Group, class_names: Sequence[str], class_index: int | None) -> dict[str, SeedResult]:
    """The group's finished jobs by seed: test mIoU (or one class's IoU) and the per-image counts of the run."""
    name = "test/mIoU" if class_index is None else f"test/iou/{class_names[class_index]}"
    results = {}
    for job in group.finished:
        seed = job.overrides.get(SEED_KEY) or str((job.metrics.get("config") or {}).get(SEED_KEY, job.name))
        counts = read_image_counts(job.path)
        usable = counts is not None and counts["classes"] == list(class_names)
        results[seed] = SeedResult(
            seed,
            float(job.metrics["test"].get(name, math.nan)),
            counts["intersection"] if usable else None,
            counts["union"] if usable else None,
        )
    return results


def compare_groups(report: Report) -> None:
    """Each group's interval of test mIoU, its paired difference to the best group and its verdict."""
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    if not scored:
        return
    rare = report.class_names.index(report.rare_class) if report.rare_class in report.class_names else None
    best = _seed_results(scored[0], report.class_names, None)
    best_rare = _seed_results(scored[0], report.class_names, rare) if rare is not None else None
    for group in scored:
        results = _seed_results(group, report.class_names, None)
        group.miou_ci = group_interval(results)
        if group is scored[0]:
            group.verdict = "best"
            continue
        group.diff = paired_difference(results, best)
        if best_rare is not None:
            group.rare_diff = paired_difference(_seed_results(group, report.class_names, rare), best_rare, rare)
        group.verdict = group.diff.verdict if group.diff is not None else "indistinguishable"
    runner = scored[1] if len(scored) > 1 else None
    if runner is not None and runner.verdict == "indistinguishable" and runner.diff is not None:
        report.seeds_suggested = seeds_needed(runner.diff.per_seed)
        if report.seeds_suggested is not None:
            report.rerun_command = rerun_command(report.sweep_dir, report.seeds_suggested)


def rerun_command(sweep_dir: Path, seeds: int) -> str | None:
    """The sweep's own command with ``seeds`` seeds, into the same dir (its finished jobs are skipped)."""
    try:
        recorded = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
        task = [str(item) for item in recorded["hydra"]["overrides"]["task"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    kept = [item for item in task if parse_override(item)[0] != SEED_KEY and not item.startswith("hydra.sweep.dir=")]
    arguments = [*kept, f"{SEED_KEY}=range(1,{seeds + 1})", f"hydra.sweep.dir={sweep_dir}"]
    return "python -m segsweep.train -m " + " ".join(shlex.quote(argument) for argument in arguments)


def fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def pm(stat: tuple[float, float], digits: int = 3) -> str:
    mean, std = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ties(groups: Sequence[Group], key: Any) -> list[Group]:
    scored = [group for group in groups if not math.isnan(key(group))]
    if not scored:
        return []
    best = min(key(group) for group in scored)
    return [group for group in scored if math.isclose(key(group), best, rel_tol=1e-9, abs_tol=1e-12)]


def _names(groups: Sequence[Group]) -> str:
    labels = [f"`{group.label}`" for group in groups]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _with_ci(group: Group) -> str:
    low, high = group.miou_ci
    mean = fmt(group.mean("test/mIoU"))
    return mean if math.isnan(low) else f"{mean}, 95% CI {low:.3f} to {high:.3f}"


def _verdict_sentence(report: Report, runner: Group) -> str:
    """Whether the winner is ahead of the runner-up beyond the uncertainty; if not, how a rerun could tell."""
    diff = runner.diff
    if diff is None or math.isnan(diff.low):
        return "With one shared seed and no per-image counts the margin has no interval: rerun with more seeds."
    interval = f"paired difference {-diff.mean:.3f}, 95% CI {-diff.high:.3f} to {-diff.low:.3f}, over {len(diff.seeds)} seed(s)"
    if runner.verdict == "worse":
        return f"The lead is beyond the uncertainty ({interval})."
    sentence = f"The two cannot be told apart: the interval includes 0 ({interval})."
    if report.seeds_suggested is not None:
        sentence += f" At the observed spread, about {report.seeds_suggested} seeds would separate them"
        sentence += f": `{report.rerun_command}`." if report.rerun_command else "."
    else:
        sentence += " At the observed spread more seeds are unlikely to separate them."
    return sentence


def headline(report: Report) -> str:
    """Winner and margin on test mIoU with their uncertainty, best group on the rarest class, fastest to converge."""
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    if not scored:
        return f"No job finished, so there is nothing to compare ({len(report.failed)} job(s) failed or missing, listed below)."
    winner = scored[0]
    n = len(winner.finished)
    if len(scored) == 1:
        sentence = f"`{winner.label}`: test mIoU {_with_ci(winner)} over {n} seed(s); no other group to compare with."
    else:
        runner = scored[1]
        margin = winner.mean("test/mIoU") - runner.mean("test/mIoU")
        sentence = (
            f"`{winner.label}` has the best test mIoU, {_with_ci(winner)} over {n} seed(s), "
            f"{margin:.3f} ahead of the runner-up `{runner.label}` ({_with_ci(runner)}). " + _verdict_sentence(report, runner)
        )
    rare = f"test/iou/{report.rare_class}"
    if report.rare_class is not None and len(scored) > 1:
        best_rare = _ties(scored, lambda group: -group.mean(rare))
        if best_rare:
            sentence += (
                f" Best on the rarest class ({report.rare_class}): {_names(best_rare)} (IoU {pm(best_rare[0].stats[rare])})."
            )
    converging = [group for group in scored if group.never_converged == 0 and group.converge_epochs]
    fastest = _ties(converging, lambda group: group.mean("converge_epoch"))
    if fastest and len(scored) > 1:
        sentence += (
            f" Fastest to converge: {_names(fastest)} (val mIoU >= {report.threshold:.3f} after "
            f"{fastest[0].mean('converge_epoch'):.1f} epoch(s) on average)."
        )
    elif not converging and not math.isnan(report.threshold):
        sentence += f" No group reached val mIoU {report.threshold:.3f} with every seed."
    return sentence
