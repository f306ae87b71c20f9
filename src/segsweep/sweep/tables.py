"""The sweep report as text: report.md, report.csv and the console table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from segsweep.runs.console import table_console
from segsweep.runs.files import csv_text
from segsweep.sweep.console_tables import fitted_tables
from segsweep.sweep.groups import Group, Report
from segsweep.sweep.headline import fmt, pm
from segsweep.sweep.intervals import Estimate
from segsweep.sweep.jobs import SEED_KEY, replicates_done
from segsweep.sweep.search import shown_label


def _converge_cell(group: Group) -> str:
    if not group.converge_epochs:
        return "-"
    never = group.never_converged
    if never == len(group.converge_epochs):
        return "never"
    cell = pm(group.stats["converge_epoch"], 1)
    return f"{cell} ({never} never)" if never else cell


def _images_cell(group: Group) -> str:
    """Training images seen until the threshold, over the seeds that reached it ('-': runs that did not count them)."""
    if group.converge_epochs and group.never_converged == len(group.converge_epochs):
        return "never"
    return pm(group.stats["converge_images"], 0)


def _difference_columns(prefix: str, diff: Estimate | None, is_best: bool, p_holm: float = math.nan) -> dict[str, float]:
    """``prefix`` (the mean paired difference to the best group; 0 for the best itself), ``_ci_low``, ``_ci_high``,
    ``_p`` (the unadjusted test) and, for test mIoU, ``_p_holm`` (adjusted over all pairs: what the verdict uses)."""
    if is_best:
        values = (0.0, 0.0, 0.0, math.nan, math.nan)
    else:
        values = (math.nan,) * 4 if diff is None else (diff.mean, diff.low, diff.high, diff.p)
        values += (p_holm,)
    columns = dict(zip((prefix, f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_p", f"{prefix}_p_holm"), values))
    if prefix != "diff_vs_best":
        del columns[f"{prefix}_p_holm"]
    return columns


def _miou_cell(group: Group, compact: bool = False) -> str:
    """Mean ± std over seeds, and the 95% interval of the mean (in report.md; the console has no room for it)."""
    low, high = group.miou_ci
    cell = pm(group.stats["test/mIoU"])
    return cell if compact or math.isnan(low) else f"{cell} [{low:.3f}, {high:.3f}]"


def _diff_cell(group: Group, compact: bool = False) -> str:
    """The paired difference to the best group; the console (``compact``) leaves the interval to report.md."""
    if group.verdict == "best":
        return "best"
    if group.diff is None or math.isnan(group.diff.mean):
        return "-"
    interval = "" if compact or math.isnan(group.diff.low) else f" [{group.diff.low:+.3f}, {group.diff.high:+.3f}]"
    adjusted = "" if compact or math.isnan(group.p_holm) else f" p={group.p_holm:.2g}"
    return f"{group.diff.mean:+.3f}{interval}{adjusted} {group.verdict}"


def _counted(group: Group, name: str, cell: str) -> str:
    """``cell``, marked with n/finished when some finished seeds have no value (NaN) for ``name``."""
    count, finished = group.counts.get(name, len(group.finished)), len(group.finished)
    return cell if count == finished or cell == "-" else f"{cell} (n={count}/{finished})"


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """One row per group. One naming rule (README, "report.csv"): a quantity's name, as metrics are logged
    (``test/mIoU``, ``test/iou/<class>``) or as the report names it (``converge_epoch``, ``diff_vs_best``), is its
    point estimate, the mean over seeds; ``_std``, ``_n``, ``_ci_low``, ``_ci_high``, ``_p``, ``_p_holm`` suffixes are
    its statistics; the swept keys, counts and the verdict stand as they are."""
    rows = []
    for rank, group in enumerate(report.groups, start=1):
        row: dict[str, Any] = {"rank": rank, "group": group.label, **group.params}
        row |= {"n_completed": len(group.finished), "n_jobs": len(group.jobs)}
        for name, (mean, std) in group.stats.items():
            row[name], row[f"{name}_std"] = mean, std
            if name in group.counts:
                row[f"{name}_n"] = group.counts[name]
        row["test/mIoU_ci_low"], row["test/mIoU_ci_high"] = group.miou_ci
        row |= _difference_columns("diff_vs_best", group.diff, group.verdict == "best", group.p_holm)
        row["verdict"] = group.verdict
        row["decided_after_seeds"] = "" if group.decided_after is None else group.decided_after
        if report.rare_class is not None:
            rare = f"test/iou/{report.rare_class}"
            row[f"{rare}_ci_low"], row[f"{rare}_ci_high"] = group.rare_ci
            row |= _difference_columns(f"{rare}_diff_vs_best", group.rare_diff, group.verdict == "best")
        row |= {"converge_never": group.never_converged, "converge_threshold": report.threshold}
        rows.append(row)
    return rows


def _columns(report: Report, compact: bool = False, details: bool = True) -> list[tuple[str, Any]]:
    """(header, cell function) of the comparison table; ``compact`` (the console) has short headers and std for test
    mIoU only; ``details=False`` leaves out `detail_columns`."""
    threshold = "-" if math.isnan(report.threshold) else f"{report.threshold:.3f}"
    return [
        ("group", shown_label),
        ("seeds" if compact else "seeds done", lambda group: replicates_done(group.jobs)),
        ("test mIoU" if compact else "test mIoU [95% CI]", lambda g: _counted(g, "test/mIoU", _miou_cell(g, compact))),
        ("vs best" if compact else "paired diff vs best [95% CI] Holm p", lambda group: _diff_cell(group, compact)),
        *(detail_columns(report, compact) if details else ()),
        (f"epochs to {threshold}" if compact else f"epochs to val mIoU {threshold}", _converge_cell),
        (f"images to {threshold}" if compact else f"train images to val mIoU {threshold}", _images_cell),
        ("time s" if compact else "wall time s", lambda group: fmt(group.mean("wall_time_s"), 1)),
    ]


def _detail(compact: bool) -> Any:
    """The cell function of a metric: its mean (the console) or mean ± std (report.md), marked when seeds lack it."""

    def detail(name: str) -> Any:
        if compact:
            return lambda group: _counted(group, name, fmt(group.mean(name)))
        return lambda group: _counted(group, name, pm(group.stats[name]))

    return detail


def detail_columns(report: Report, compact: bool = False) -> list[tuple[str, Any]]:
    """(header, cell function) of the test IoU of each class, mean Dice, pixel accuracy, boundary F1 and, where the
    runs computed them, each class's HD95 and NSD (what the console folds into a table of their own when the terminal
    is too narrow). report.csv has every class's Dice too."""
    detail = _detail(compact)
    summarised = set(report.groups[0].stats) if report.groups else set()
    columns = [(name if compact else f"IoU {name}", detail(f"test/iou/{name}")) for name in report.class_names]
    columns += [("mDice", detail("test/mDice"))] if "test/mDice" in summarised else []
    columns += [("pixel acc", detail("test/pixel_acc")), ("boundary F1", detail("test/boundary_f1"))]
    for kind in ("hd95", "nsd"):  # the surface metrics, in pixels and as a share of the boundary
        names = [name for name in report.class_names if f"test/{kind}/{name}" in summarised]
        columns += [(f"{kind.upper()} {name}", detail(f"test/{kind}/{name}")) for name in names]
    return columns


def _is_best(report: Report, group: Group) -> bool:
    """The best group of the sweep (of its rarity level, in a rarity sweep)."""
    return group.verdict == "best" and not math.isnan(group.mean("test/mIoU"))


def adaptive_lines(report: Report) -> list[str]:
    """An adaptive design's outcome: after how many seeds each group was decided, and the runs it saved."""
    design = report.adaptive
    lines = []
    for group in report.groups:
        seeds = len(group.finished)
        if group.decided_after is not None:
            lines.append(f"`{shown_label(group)}`: {group.verdict}, decided after {group.decided_after} seeds")
        else:
            lines.append(f"`{shown_label(group)}`: {group.verdict}, not decided after {seeds} seeds")
    largest = max(design.stages)
    lines.append(
        f"{design.runs()} runs over {design.looks_done} of {design.looks} looks; {design.runs_saved()} fewer than "
        f"{largest} seeds for every group ({largest * len(design.seeds)} runs)"
    )
    return lines


def guarantee(report: Report) -> str:
    """What the intervals and verdicts promise, and under which assumptions: one paragraph of report.md."""
    family = f"the groups of one `{report.stratum_key}` level" if report.stratum_key else "the groups"
    looks = (
        f" This adaptive design looked {report.looks} times (stages {report.adaptive.stages}) and tested at "
        f"{report.alpha:g}/{report.looks} each time, so stopping early does not make `worse` easier."
        if report.adaptive is not None
        else ""
    )
    return (
        "Uncertainty: each [95% CI] covers its true value (the mean over seeds and over test sets drawn like this one) "
        "in 95% of studies: a t-interval over the seeds, with the test images' sampling variance (from "
        "`test_image_counts.npz`) added once; the paired difference compares runs of the same seed. A group is "
        f"`worse` when its Holm-adjusted p (over every pair of {family}) is at most {report.alpha:g}: the chance that any "
        f"group as good as the best is called `worse` is at most {report.alpha:g} for the whole table, whichever group the "
        "data made best; otherwise `indistinguishable`. Assumed: seeds independent, per-seed differences roughly "
        f"normal (a seed that fails outright makes them bimodal).{looks} (n=k/m) marks a mean over k of the m "
        "finished seeds (the others recorded NaN)."
    )


def markdown(report: Report, sections: Sequence[str] = ()) -> str:
    """report.md: headline, table, the lines of ``sections`` (a search's top trials), failed jobs, plots."""
    columns = _columns(report)
    swept = ", ".join(f"`{key}`" for key in report.swept) or "nothing but the seed"
    lines = [
        f"# Sweep report: {report.sweep_dir.name}",
        "",
        report.headline,
        "",
        f"Groups: every swept override except `{SEED_KEY}` ({swept}); mean ± sample std over the seeds that finished. "
        f"Sorted by test mIoU, best first (**bold**). Epochs to threshold count from 1 (1 = reached at the end of the "
        f"first epoch), averaged over the seeds that reached it; threshold = {report.threshold_note}. Train images to "
        "threshold: the training images seen by then, a sampler's repeats counted, so samplers compare ('-': not recorded).",
        "",
        guarantee(report),
        "",
        "| " + " | ".join(header for header, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for group in report.groups:
        cells = [str(cell(group)).replace("|", "\\|") for _, cell in columns]
        if _is_best(report, group):
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if sections:
        lines += ["", *sections]
    if report.adaptive is not None:
        lines += ["", "## Adaptive seeds", "", *(f"- {line}" for line in adaptive_lines(report))]
    lines += ["", "## Failed or missing jobs", ""]
    pruned = any(job.pruned for group in report.groups for job in group.jobs)
    none = "None: every job finished or was pruned." if pruned else "None: every job finished."
    lines += [f"- `{job.name}`: {job.error}" for job in report.failed] or [none]
    plots = {name: path for name, path in report.paths.items() if path.suffix == ".png"}
    if plots or report.notes:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    return csv_text(csv_rows(report))


def rich_tables(report: Report, console: Console) -> list[Table]:
    """The console tables, fitted to the console's width (sweep/console_tables.py), best group first in bold green;
    std of the per-class columns is in report.md."""
    columns = _columns(report, compact=True, details=False)[1:]
    best = [_is_best(report, group) for group in report.groups]
    return fitted_tables(report, columns, detail_columns(report, compact=True), best, console)


def print_report(report: Report, console: Console | None = None, tables: Sequence[RenderableType] = ()) -> None:
    """The table (best group in bold green), the other ``tables`` (a search's top trials), failed jobs, where the files are."""
    console = console or table_console()
    for table in rich_tables(report, console):
        console.print(table)
    for table in tables:
        console.print(table)
    console.print(report.headline.replace("`", ""), highlight=False)
    for job in report.failed:
        console.print(f"[red]not finished[/red] {job.name}: {job.error}", markup=True, highlight=False)
    if report.adaptive is not None:
        for line in adaptive_lines(report):
            console.print(f"adaptive seeds: {line.replace('`', '')}", highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.paths:
        # paths unbroken, to copy (the terminal wraps them, rich would insert line breaks)
        console.print(f"report: {', '.join(str(path) for path in report.paths.values())}", highlight=False, soft_wrap=True)
