"""A sweep's summary: jobs grouped by their swept overrides, per-group statistics, intervals and verdicts, the ranking."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

from segsweep.sweep.adaptive import Design, read_design
from segsweep.sweep.groups import Group, Report, strata
from segsweep.sweep.headline import headline
from segsweep.sweep.imbalance import pixel_share
from segsweep.sweep.intervals import Estimate, SeedResult, group_estimate
from segsweep.sweep.jobs import REPLICATE_KEYS, SEED_KEY, Job, find_jobs, group_jobs, parse_override, replicate_of, swept_keys
from segsweep.sweep.stats import convergence_epoch, convergence_images, default_threshold, mean_std, nan_to
from segsweep.sweep.verdicts import compare_to_best, pairs, seeds_needed

# the swept key of a two-axis imbalance study (conf/rarity): groups are compared within one rarity level
RARITY_KEY = "rarity"
# the test metrics a group summarises over its seeds; those of OPTIONAL_METRICS only where a run logged them (older
# runs had no Dice; HD95 and NSD need module.surface_metrics=true)
SUMMARY_METRICS = ("test/mIoU", "test/mDice", "test/pixel_acc", "test/boundary_f1")
PER_CLASS_METRICS = ("iou", "dice", "hd95", "nsd")
OPTIONAL_METRICS = re.compile(r"^test/(mDice|(dice|hd95|nsd)/.+)$")


def summarised_metrics(finished: Sequence[Job], class_names: Sequence[str]) -> list[str]:
    """The names of the test metrics a report summarises, the per-class ones in the dataset's class order."""
    logged = {name for job in finished for name in job.metrics["test"]}
    names = [*SUMMARY_METRICS, *(f"test/{kind}/{name}" for kind in PER_CLASS_METRICS for name in class_names)]
    return [name for name in names if name in logged or not OPTIONAL_METRICS.match(name)]


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
    rare_class = rarest_class(finished, class_names)
    metric_names = summarised_metrics(finished, class_names)
    groups = []
    for label, members in group_jobs(readable, [key for key in keys if key not in REPLICATE_KEYS]).items():
        group = Group(
            label=label,
            params={key: members[0].overrides.get(key, "<default>") for key in keys if key not in REPLICATE_KEYS},
            jobs=members,
        )
        done = group.finished
        for name in metric_names:
            values = [job.metrics["test"].get(name, math.nan) for job in done]
            group.stats[name] = mean_std(values)
            group.counts[name] = sum(value is not None and not math.isnan(value) for value in values)
        group.converge_epochs = [convergence_epoch(job.history, threshold) if not math.isnan(threshold) else None for job in done]
        group.stats["converge_epoch"] = mean_std([epoch for epoch in group.converge_epochs if epoch is not None])
        images = [convergence_images(job.history, threshold) for job in done]
        group.stats["converge_images"] = mean_std([count for count in images if count is not None])
        group.stats["wall_time_s"] = mean_std([job.history[-1].get("time_s", math.nan) for job in done if job.history])
        groups.append(group)
    groups.sort(key=lambda group: (math.isnan(group.mean("test/mIoU")), -nan_to(group.mean("test/mIoU"), 0.0)))
    stratum_key = next((key for key in keys if key.rsplit(".", 1)[-1] == RARITY_KEY), None)
    if stratum_key is not None:
        # a rarity sweep reads level by level, the commonest first; within a level, best first
        shares = {}
        for group in groups:
            shares.setdefault(group.params.get(stratum_key), []).append(pixel_share(group.finished, rare_class or ""))
        order = {level: -nan_to(sum(values) / len(values), -1.0) for level, values in shares.items()}
        groups.sort(key=lambda group: order[group.params.get(stratum_key)])
    report = Report(
        sweep_dir=sweep_dir,
        swept=[key for key in keys if key not in REPLICATE_KEYS],
        class_names=class_names,
        rare_class=rare_class,
        stratum_key=stratum_key,
        threshold=threshold,
        threshold_note=threshold_note,
        groups=groups,
        failed=[job for job in jobs if not job.finished and not job.pruned],  # a search lists its pruned trials apart
    )
    design = read_design(sweep_dir)
    if design is not None:
        report.looks, report.alpha, report.adaptive = design.looks, design.alpha, design
    compare_groups(report)
    if design is not None:
        decided_after(report, design)
    report.headline = headline(report)
    return report


def _seed_results(group: Group, class_names: Sequence[str], class_index: int | None) -> dict[str, SeedResult]:
    """The group's finished jobs by replicate (seed, and fold in a k-fold sweep): test mIoU (or one class's IoU) and
    the per-image counts of the run."""
    name = "test/mIoU" if class_index is None else f"test/iou/{class_names[class_index]}"
    results = {}
    for job in group.finished:
        seed = replicate_of(job)
        counts = job.image_counts
        usable = counts is not None and counts["classes"] == list(class_names)
        results[seed] = SeedResult(
            seed,
            float(job.metrics["test"].get(name, math.nan)),
            counts["intersection"] if usable else None,
            counts["union"] if usable else None,
        )
    return results


def compare_groups(report: Report) -> None:
    """Each group's intervals of test mIoU and rare-class IoU, its paired difference to the best group of its stratum
    with the Holm-adjusted p and the verdict (sweep/verdicts.py); the seeds a rerun needs when the runner-up cannot
    be told from the winner."""
    rare = report.class_names.index(report.rare_class) if report.rare_class in report.class_names else None
    for groups in strata(report).values():
        results = [_seed_results(group, report.class_names, None) for group in groups]
        comparisons = compare_to_best(results, alpha=report.alpha, looks=report.looks)
        rare_results = [_seed_results(group, report.class_names, rare) for group in groups] if rare is not None else []
        rare_diffs = compare_to_best(rare_results, rare, alpha=report.alpha, looks=report.looks) if rare is not None else []
        for index, group in enumerate(groups):
            group.miou_ci = _bounds(group_estimate(results[index]))
            if rare is not None:
                group.rare_ci = _bounds(group_estimate(rare_results[index], rare))
            if index == 0:
                group.verdict = "best"
                continue
            group.diff, group.p_holm, group.verdict = comparisons[index - 1]
            if rare is not None:
                group.rare_diff = rare_diffs[index - 1][0]
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    runner = scored[1] if len(scored) > 1 and report.stratum_key is None else None
    if runner is not None and runner.verdict == "indistinguishable" and runner.diff is not None:
        report.seeds_suggested = seeds_needed(runner.diff, len(pairs(len(scored))), alpha=report.alpha, looks=report.looks)
        if report.seeds_suggested is not None:
            report.rerun_command = rerun_command(report.sweep_dir, report.seeds_suggested)


def _bounds(estimate: Estimate) -> tuple[float, float]:
    """A group's interval of an IoU, clipped to [0, 1]: the true value lies there, so coverage is unchanged."""
    return min(max(estimate.low, 0.0), 1.0), min(max(estimate.high, 0.0), 1.0)


def decided_after(report: Report, design: Design) -> None:
    """Per group, the seeds after which an adaptive design decided its verdict; the best group of a stratum is decided
    once all the others are."""
    for groups in strata(report).values():
        for group in groups[1:]:
            group.decided_after = design.decided.get(group.label)
        others = [group.decided_after for group in groups[1:]]
        if others and None not in others:
            groups[0].decided_after = max(others)


def rerun_command(sweep_dir: Path, seeds: int) -> str | None:
    """The sweep's own command with ``seeds`` seeds, into the same dir (its finished jobs are skipped)."""
    try:
        recorded = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
        task = [str(item) for item in recorded["hydra"]["overrides"]["task"]]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):  # ValueError: not UTF-8
        return None
    kept = [item for item in task if parse_override(item)[0] != SEED_KEY and not item.startswith("hydra.sweep.dir=")]
    arguments = [*kept, f"{SEED_KEY}=range(1,{seeds + 1})", f"hydra.sweep.dir={sweep_dir}"]
    return "python -m segsweep.train -m " + " ".join(shlex.quote(argument) for argument in arguments)
