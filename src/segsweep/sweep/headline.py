"""The report's verdict in words: the winner and its margin with their uncertainty, the rarest class, convergence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from segsweep.runs.overrides import shown_value
from segsweep.sweep.groups import Group, Report, strata
from segsweep.sweep.imbalance import degrades_least, rarity_curves
from segsweep.sweep.search import shown_label


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
    labels = [f"`{shown_label(group)}`" for group in groups]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _with_ci(group: Group) -> str:
    low, high = group.miou_ci
    mean = fmt(group.mean("test/mIoU"))
    return mean if math.isnan(low) else f"{mean}, 95% CI {low:.3f} to {high:.3f}"


def _verdict_sentence(report: Report, runner: Group) -> str:
    """Whether the winner is ahead of the runner-up beyond the uncertainty; if not, how a rerun could tell."""
    diff = runner.diff
    if diff is None or math.isnan(diff.low):
        return "With one shared seed the margin has no interval: rerun with more seeds."
    seeds = diff.seeds
    interval = f"paired difference {-diff.mean:.3f}, 95% CI {-diff.high:.3f} to {-diff.low:.3f}, over {seeds} seed(s)"
    if runner.verdict == "worse":
        return f"The lead is beyond the uncertainty ({interval}; Holm-adjusted p {runner.p_holm:.2g})."
    level = f"{report.alpha:g}" if report.looks == 1 else f"{report.alpha:g}/{report.looks} looks"
    sentence = f"{seeds} seeds cannot tell the two apart ({interval}; Holm-adjusted p {runner.p_holm:.2g}, above {level})."
    if report.seeds_suggested is not None:
        sentence += f" At the observed spread, about {report.seeds_suggested} seeds would separate them"
        sentence += f": `{report.rerun_command}`." if report.rerun_command else "."
    else:
        sentence += " At the observed spread more seeds are unlikely to separate them."
    return sentence


def _strategy(report: Report, group: Group) -> str:
    """A group's label without the rarity key (within one level it is the same for all)."""
    params = [(key, value) for key, value in group.params.items() if key != report.stratum_key]
    return ",".join(f"{key}={shown_value(value)}" for key, value in params) or group.label


def _stratified_headline(report: Report) -> str:
    """A two-axis (strategy x rarity) sweep: which strategy degrades least, and the best group at each level."""
    sentences = []
    curves = rarity_curves(report.groups, report.stratum_key, report.rare_class) if report.rare_class else {}
    least = degrades_least(curves)
    if least is not None:
        strategy, common, rarest = least
        sentences.append(
            f"Degrades least as {report.rare_class} gets rarer: `{strategy}` (IoU {report.rare_class} {common:.3f} at the "
            f"commonest level, {rarest:.3f} at the rarest)."
        )
    for level, groups in strata(report).items():
        runner = groups[1] if len(groups) > 1 else None
        best = groups[0]
        sentence = f"At `{report.stratum_key}={level}`: `{_strategy(report, best)}` has the best test mIoU ({_with_ci(best)})"
        if runner is not None and runner.diff is not None:
            beyond = "beyond the uncertainty" if runner.verdict == "worse" else "within the uncertainty"
            sentence += f", {-runner.diff.mean:.3f} ahead of `{_strategy(report, runner)}`, {beyond}"
        sentences.append(sentence + ".")
    return " ".join(sentences)


def headline(report: Report) -> str:
    """Winner and margin on test mIoU with their uncertainty, best group on the rarest class, fastest to converge."""
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    if not scored:
        pruned = sum(job.pruned for group in report.groups for job in group.jobs)
        why = f"{len(report.failed)} job(s) failed or missing" + (f", {pruned} pruned by the search" if pruned else "")
        return f"No job finished, so there is nothing to compare ({why}, listed below)."
    if report.stratum_key is not None:
        return _stratified_headline(report)
    winner = scored[0]
    n = len(winner.finished)
    if len(scored) == 1:
        sentence = f"`{shown_label(winner)}`: test mIoU {_with_ci(winner)} over {n} seed(s); no other group to compare with."
    else:
        runner = scored[1]
        margin = winner.mean("test/mIoU") - runner.mean("test/mIoU")
        sentence = (
            f"`{shown_label(winner)}` has the best test mIoU, {_with_ci(winner)} over {n} seed(s), "
            f"{margin:.3f} ahead of the runner-up `{shown_label(runner)}` ({_with_ci(runner)}). "
            + _verdict_sentence(report, runner)
        )
    rare = f"test/iou/{report.rare_class}"
    if report.rare_class is not None and len(scored) > 1:
        best_rare = _ties(scored, lambda group: -group.mean(rare))
        if best_rare:
            sentence += (
                f" Best on the rarest class ({report.rare_class}): {_names(best_rare)} (IoU {pm(best_rare[0].stats[rare])})."
            )
    converging = [group for group in scored if group.never_converged == 0 and group.converge_epochs]
    # ranked by training images seen whenever the runs counted them (epochs for older runs): an epoch of repeat-factor
    # sampling holds more images than a uniform one, and groups may train on different numbers of images
    by_images = all(not math.isnan(group.mean("converge_images")) for group in converging)
    fastest = _ties(converging, lambda group: group.mean("converge_images" if by_images else "converge_epoch"))
    if fastest and len(scored) > 1:
        images = f", {fastest[0].mean('converge_images'):,.0f} training images" if by_images else ""
        sentence += (
            f" Fastest to converge: {_names(fastest)} (val mIoU >= {report.threshold:.3f} after "
            f"{fastest[0].mean('converge_epoch'):.1f} epoch(s){images} on average)."
        )
    elif not converging and not math.isnan(report.threshold):
        sentence += f" No group reached val mIoU {report.threshold:.3f} with every seed."
    return sentence
