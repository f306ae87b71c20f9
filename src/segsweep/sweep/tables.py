"""The sweep report as text: report.md, report.csv and the console table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from segsweep.runs.console import table_console
from segsweep.runs.files import csv_text
from segsweep.sweep.bootstrap import PairedDifference
from segsweep.sweep.groups import Group, Report
from segsweep.sweep.headline import fmt, pm
from segsweep.sweep.jobs import SEED_KEY
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


def _difference_columns(prefix: str, diff: PairedDifference | None, is_best: bool) -> dict[str, float]:
    """``prefix``, ``prefix_ci_low``, ``prefix_ci_high``: the paired difference to the best group (0 for the best itself)."""
    if is_best:
        return {prefix: 0.0, f"{prefix}_ci_low": 0.0, f"{prefix}_ci_high": 0.0}
    values = (math.nan,) * 3 if diff is None else (diff.mean, diff.low, diff.high)
    return dict(zip((prefix, f"{prefix}_ci_low", f"{prefix}_ci_high"), values))


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
    return f"{group.diff.mean:+.3f}{interval} {group.verdict}"


def _counted(group: Group, name: str, cell: str) -> str:
    """``cell``, marked with n/finished when some finished seeds have no value (NaN) for ``name``."""
    count, finished = group.counts.get(name, len(group.finished)), len(group.finished)
    return cell if count == finished or cell == "-" else f"{cell} (n={count}/{finished})"


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """One row per group: swept values, counts, mean and std of every metric, convergence, wall time."""
    rows = []
    for rank, group in enumerate(report.groups, start=1):
        row: dict[str, Any] = {"rank": rank, "group": group.label, **group.params}
        row |= {"n_completed": len(group.finished), "n_jobs": len(group.jobs)}
        for name, stat in group.stats.items():
            column = name.replace("test/", "test_").replace("/", "_")
            row[f"{column}_mean"], row[f"{column}_std"] = stat
            if name in group.counts:
                row[f"{column}_n"] = group.counts[name]
        row["test/mIoU_ci_low"], row["test/mIoU_ci_high"] = group.miou_ci
        row |= _difference_columns("diff_vs_best", group.diff, group.verdict == "best")
        row["verdict"] = group.verdict
        if report.rare_class is not None:
            row |= _difference_columns(f"rare_iou_{report.rare_class}_diff_vs_best", group.rare_diff, group.verdict == "best")
        row |= {"converge_never": group.never_converged, "converge_threshold": report.threshold}
        rows.append(row)
    return rows


def _columns(report: Report, compact: bool = False) -> list[tuple[str, Any]]:
    """(header, cell function) of the comparison table; ``compact`` (the console) has short headers and std for test mIoU only."""
    threshold = "-" if math.isnan(report.threshold) else f"{report.threshold:.3f}"

    def detail(name: str) -> Any:
        if compact:
            return lambda group: _counted(group, name, fmt(group.mean(name)))
        return lambda group: _counted(group, name, pm(group.stats[name]))

    return [
        ("group", shown_label),
        ("seeds" if compact else "seeds done", lambda group: f"{len(group.finished)}/{len(group.jobs)}"),
        ("test mIoU" if compact else "test mIoU [95% CI]", lambda g: _counted(g, "test/mIoU", _miou_cell(g, compact))),
        ("vs best" if compact else "paired diff vs best [95% CI]", lambda group: _diff_cell(group, compact)),
        *((name if compact else f"IoU {name}", detail(f"test/iou/{name}")) for name in report.class_names),
        ("pixel acc", detail("test/pixel_acc")),
        ("boundary F1", detail("test/boundary_f1")),
        (f"epochs to {threshold}" if compact else f"epochs to val mIoU {threshold}", _converge_cell),
        (f"images to {threshold}" if compact else f"train images to val mIoU {threshold}", _images_cell),
        ("time s" if compact else "wall time s", lambda group: fmt(group.mean("wall_time_s"), 1)),
    ]


def _is_best(report: Report, group: Group) -> bool:
    """The best group of the sweep (of its rarity level, in a rarity sweep)."""
    return group.verdict == "best" and not math.isnan(group.mean("test/mIoU"))


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
        "Uncertainty: [95% CI] of test mIoU is a bootstrap over seeds and test images (per-image intersection and union "
        "counts, `test_image_counts.npz`); the paired difference to the best group compares runs of the same seed "
        "(same initial weights and data order). `worse`: the whole interval is below 0; `indistinguishable`: it includes 0. "
        "(n=k/m) marks a mean over k of the m finished seeds (the others recorded NaN).",
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
    lines += ["", "## Failed or missing jobs", ""]
    lines += [f"- `{job.name}`: {job.error}" for job in report.failed] or ["None: every job finished."]
    plots = {name: path for name, path in report.paths.items() if path.suffix == ".png"}
    if plots or report.notes:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    return csv_text(csv_rows(report))


def rich_table(report: Report) -> Table:
    """The console table, best group first in bold green; std of the per-class columns is in report.md."""
    columns = _columns(report, compact=True)
    title = f"Sweep {report.sweep_dir}: test metrics (IoU per class), epochs counted from 1, wall time"
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("rank", justify="right")
    for index, (header, cell) in enumerate(columns):
        keep = index in (0, 2, 3)  # the group label, test mIoU and the verdict are never folded
        widest = max((len(str(cell(group))) for group in report.groups), default=1) if keep else None
        table.add_column(header.replace(" ", "\n"), min_width=widest, no_wrap=keep, overflow="fold")
    for rank, group in enumerate(report.groups, start=1):
        best = _is_best(report, group)
        table.add_row(
            "best" if best else str(rank), *(str(cell(group)) for _, cell in columns), style="bold green" if best else None
        )
    return table


def print_report(report: Report, console: Console | None = None, tables: Sequence[RenderableType] = ()) -> None:
    """The table (best group in bold green), the other ``tables`` (a search's top trials), failed jobs, where the files are."""
    # piped output (make, CI logs) would otherwise wrap the table at 80 columns
    console = console or table_console()
    console.print(rich_table(report))
    for table in tables:
        console.print(table)
    console.print(report.headline.replace("`", ""), highlight=False)
    for job in report.failed:
        console.print(f"[red]not finished[/red] {job.name}: {job.error}", markup=True, highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.paths:
        console.print(f"report: {', '.join(str(path) for path in report.paths.values())}", highlight=False)
