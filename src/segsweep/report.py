"""Sweep report: a multirun dir -> comparison table (console, report.md, report.csv) and PNG plots.

``segsweep-report SWEEP_DIR`` / ``python -m segsweep.report SWEEP_DIR``, and automatically at the end of
every multirun (``SweepReportCallback``, configured under ``hydra.callbacks.report``).

Jobs are grouped by every swept override except ``seed``; a swept override is a key whose value
differs across the jobs' ``.hydra/overrides.yaml``. Each group gets mean and sample std (ddof=1)
over its finished seeds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich import box
from rich.console import Console
from rich.table import Table

from segsweep.files import write_text_atomic

log = logging.getLogger(__name__)

SEED_KEY = "seed"
THRESHOLD_FRACTION = 0.9
RARE_CLASS = "pedestrian"
CLASS_ORDER = ("background", "road", "car", "pedestrian")
SUMMARY_METRICS = {"test/mIoU": "test mIoU", "test/pixel_acc": "pixel acc", "test/boundary_f1": "boundary F1"}
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

    @property
    def finished(self) -> bool:
        return self.error is None

    @property
    def history(self) -> list[dict[str, Any]]:
        return sorted((self.metrics or {}).get("history") or [], key=lambda entry: entry.get("epoch", 0))

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoints" / "best.ckpt").is_file()


@dataclass
class Group:
    label: str
    params: dict[str, str]
    jobs: list[Job]
    # metric name -> (mean, std) over finished seeds: test/mIoU, test/iou/<class>, ..., converge_epoch, wall_time_s
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
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
    threshold: float
    threshold_note: str
    groups: list[Group]  # best test mIoU first
    failed: list[Job]
    rows: list[dict[str, Any]] = field(default_factory=list)  # report.csv, one per group
    headline: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading jobs


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
        job.overrides = dict(parse_override(str(item)) for item in overrides)
    except (OSError, yaml.YAMLError) as error:
        job.error = f".hydra/overrides.yaml unreadable ({type(error).__name__})"
        return job
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        job.error = "no metrics.json (killed, or still running)"
        return job
    try:
        job.metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as error:
        job.error = f"metrics.json unreadable ({type(error).__name__}: {error})"
        return job
    status = job.metrics.get("status")
    if status != "completed":
        job.error = f"{status or 'no status'}: {job.metrics.get('error') or 'no error recorded'}"
    elif not isinstance((job.metrics.get("test") or {}).get("test/mIoU"), (int, float)):
        job.error = "no test metrics (killed before or during testing)"
    return job


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every Hydra job under the sweep dir (a dir with ``.hydra/overrides.yaml``), in natural name order."""
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
    return sorted(jobs, key=lambda job: _natural(job.name))


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


# ---------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the non-NaN values; std is NaN for a single value."""
    values = [float(value) for value in values if value is not None and not math.isnan(float(value))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def convergence_epoch(history: Sequence[dict[str, Any]], threshold: float, metric: str = "val/mIoU") -> int | None:
    """The epoch, counted from 1, at whose end ``metric`` first reached ``threshold``; None if it never did."""
    for position, entry in enumerate(sorted(history, key=lambda entry: entry.get("epoch", 0))):
        value = entry.get(metric)
        if value is not None and not math.isnan(value) and value >= threshold:
            return int(entry["epoch"]) + 1 if "epoch" in entry else position + 1
    return None


def default_threshold(jobs: Sequence[Job], fraction: float = THRESHOLD_FRACTION) -> tuple[float, str]:
    """``fraction`` x the best val mIoU any job reached (failed ones too), and a note saying so."""
    best, best_job = -math.inf, None
    for job in jobs:
        for entry in job.history:
            value = entry.get("val/mIoU")
            if value is not None and not math.isnan(value) and value > best:
                best, best_job = value, job.name
    if best_job is None:
        return math.nan, "no job has a val mIoU history"
    return fraction * best, f"{fraction:g} x the best val mIoU of the sweep ({best:.4f}, job {best_job})"


def class_names_of(jobs: Sequence[Job]) -> list[str]:
    """Class names of the ``test/iou/<class>`` metrics, in the scene generator's order when known."""
    names = {
        key.removeprefix("test/iou/")
        for job in jobs
        for key in (job.metrics or {}).get("test", {})
        if key.startswith("test/iou/")
    }
    return [name for name in CLASS_ORDER if name in names] + sorted(names - set(CLASS_ORDER))


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
            group.stats[name] = mean_std([job.metrics["test"].get(name, math.nan) for job in done])
        group.converge_epochs = [convergence_epoch(job.history, threshold) if not math.isnan(threshold) else None for job in done]
        group.stats["converge_epoch"] = mean_std([epoch for epoch in group.converge_epochs if epoch is not None])
        group.stats["wall_time_s"] = mean_std([job.history[-1].get("time_s", math.nan) for job in done if job.history])
        groups.append(group)
    groups.sort(key=lambda group: (math.isnan(group.mean("test/mIoU")), -_nan_to(group.mean("test/mIoU"), 0.0)))
    report = Report(
        sweep_dir=sweep_dir,
        swept=[key for key in keys if key != SEED_KEY],
        class_names=class_names,
        threshold=threshold,
        threshold_note=threshold_note,
        groups=groups,
        failed=[job for job in jobs if not job.finished],
    )
    report.rows = csv_rows(report)
    report.headline = headline(report)
    return report


def _nan_to(value: float, default: float) -> float:
    return default if math.isnan(value) else value


# ---------------------------------------------------------------- text


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _pm(stat: tuple[float, float], digits: int = 3) -> str:
    mean, std = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _converge_cell(group: Group) -> str:
    if not group.converge_epochs:
        return "-"
    never = group.never_converged
    if never == len(group.converge_epochs):
        return "never"
    cell = _pm(group.stats["converge_epoch"], 1)
    return f"{cell} ({never} never)" if never else cell


def _ties(groups: Sequence[Group], key: Any) -> list[Group]:
    scored = [group for group in groups if not math.isnan(key(group))]
    if not scored:
        return []
    best = min(key(group) for group in scored)
    return [group for group in scored if math.isclose(key(group), best, rel_tol=1e-9, abs_tol=1e-12)]


def _names(groups: Sequence[Group]) -> str:
    labels = [f"`{group.label}`" for group in groups]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def headline(report: Report) -> str:
    """Winner and margin on test mIoU, best group on the rarest class, fastest to converge."""
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    if not scored:
        return f"No job finished, so there is nothing to compare ({len(report.failed)} job(s) failed or missing, listed below)."
    winner = scored[0]
    n = len(winner.finished)
    if len(scored) == 1:
        sentence = (
            f"`{winner.label}`: test mIoU {_pm(winner.stats['test/mIoU'])} over {n} seed(s); no other group to compare with."
        )
    else:
        runner = scored[1]
        margin = winner.mean("test/mIoU") - runner.mean("test/mIoU")
        spread = max(_nan_to(winner.stats["test/mIoU"][1], 0.0), _nan_to(runner.stats["test/mIoU"][1], 0.0))
        sentence = (
            f"`{winner.label}` has the best test mIoU, {_pm(winner.stats['test/mIoU'])} over {n} seed(s), "
            f"{margin:.3f} ahead of the runner-up `{runner.label}` ({_pm(runner.stats['test/mIoU'])})"
            + (", a margin within the seed-to-seed std." if margin <= spread else ".")
        )
    rare = f"test/iou/{RARE_CLASS}"
    if RARE_CLASS in report.class_names and len(scored) > 1:
        best_rare = _ties(scored, lambda group: -group.mean(rare))
        if best_rare:
            sentence += f" Best on the rarest class ({RARE_CLASS}): {_names(best_rare)} (IoU {_pm(best_rare[0].stats[rare])})."
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


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """One row per group: swept values, counts, mean and std of every metric, convergence, wall time."""
    rows = []
    for rank, group in enumerate(report.groups, start=1):
        row: dict[str, Any] = {"rank": rank, "group": group.label, **group.params}
        row |= {"n_completed": len(group.finished), "n_jobs": len(group.jobs)}
        for name, stat in group.stats.items():
            column = name.replace("test/", "test_").replace("/", "_")
            row[f"{column}_mean"], row[f"{column}_std"] = stat
        row |= {"converge_never": group.never_converged, "converge_threshold": report.threshold}
        rows.append(row)
    return rows


def _columns(report: Report, compact: bool = False) -> list[tuple[str, Any]]:
    """(header, cell function) of the comparison table; ``compact`` (the console) has short headers and std for test mIoU only."""
    threshold = "-" if math.isnan(report.threshold) else f"{report.threshold:.3f}"
    detail = (
        (lambda name: lambda group: _fmt(group.mean(name))) if compact else (lambda name: lambda group: _pm(group.stats[name]))
    )
    return [
        ("group", lambda group: group.label),
        ("seeds" if compact else "seeds done", lambda group: f"{len(group.finished)}/{len(group.jobs)}"),
        ("test mIoU", lambda group: _pm(group.stats["test/mIoU"])),
        *((name if compact else f"IoU {name}", detail(f"test/iou/{name}")) for name in report.class_names),
        ("pixel acc", detail("test/pixel_acc")),
        ("boundary F1", detail("test/boundary_f1")),
        (f"epochs to {threshold}" if compact else f"epochs to val mIoU {threshold}", _converge_cell),
        ("time s" if compact else "wall time s", lambda group: _fmt(group.mean("wall_time_s"), 1)),
    ]


def _is_best(report: Report, group: Group) -> bool:
    return group is report.groups[0] and not math.isnan(group.mean("test/mIoU"))


def markdown(report: Report) -> str:
    """report.md: headline, table, failed jobs, plots."""
    columns = _columns(report)
    swept = ", ".join(f"`{key}`" for key in report.swept) or "nothing but the seed"
    lines = [
        f"# Sweep report: {report.sweep_dir.name}",
        "",
        report.headline,
        "",
        f"Groups: every swept override except `{SEED_KEY}` ({swept}); mean ± sample std over the seeds that finished. "
        f"Sorted by test mIoU, best first (**bold**). Epochs to threshold count from 1 (1 = reached at the end of the "
        f"first epoch), averaged over the seeds that reached it; threshold = {report.threshold_note}.",
        "",
        "| " + " | ".join(header for header, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for group in report.groups:
        cells = [str(cell(group)).replace("|", "\\|") for _, cell in columns]
        if _is_best(report, group):
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Failed or missing jobs", ""]
    lines += [f"- `{job.name}`: {job.error}" for job in report.failed] or ["None: every job finished."]
    plots = {name: path for name, path in report.paths.items() if path.suffix == ".png"}
    if plots or report.notes:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    columns = list(dict.fromkeys(key for row in report.rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()})
    return buffer.getvalue()


def rich_table(report: Report) -> Table:
    """The console table, best group first in bold green; std of the per-class columns is in report.md."""
    columns = _columns(report, compact=True)
    title = f"Sweep {report.sweep_dir}: test metrics (IoU per class), epochs counted from 1, wall time"
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("rank", justify="right")
    for index, (header, cell) in enumerate(columns):
        keep = index in (0, 2)  # the group label and test mIoU are never folded
        widest = max((len(str(cell(group))) for group in report.groups), default=1) if keep else None
        table.add_column(header.replace(" ", "\n"), min_width=widest, no_wrap=keep, overflow="fold")
    for rank, group in enumerate(report.groups, start=1):
        best = _is_best(report, group)
        table.add_row(
            "best" if best else str(rank), *(str(cell(group)) for _, cell in columns), style="bold green" if best else None
        )
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    """The table (best group in bold green), the failed jobs and where the files are."""
    # piped output (make, CI logs) would otherwise wrap the table at 80 columns
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    console.print(rich_table(report))
    console.print(report.headline.replace("`", ""), highlight=False)
    for job in report.failed:
        console.print(f"[red]not finished[/red] {job.name}: {job.error}", markup=True, highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.paths:
        console.print(f"report: {', '.join(str(path) for path in report.paths.values())}", highlight=False)


# ---------------------------------------------------------------- files


def _plots(report: Report, num_images: int) -> None:
    from segsweep import plots

    done = [group for group in report.groups if group.finished]
    if not done:
        return
    curves = {
        group.label: [
            [
                (int(entry.get("epoch", index)) + 1, float(entry.get("val/mIoU", math.nan)))
                for index, entry in enumerate(job.history)
            ]
            for job in group.finished
        ]
        for group in done
    }
    drawers = {
        "curves": lambda path: plots.learning_curves(curves, path, report.threshold),
        "per_class_iou": lambda path: plots.per_class_iou(
            [group.label for group in done],
            report.class_names,
            [[group.stats[f"test/iou/{name}"][0] for name in report.class_names] for group in done],
            [[group.stats[f"test/iou/{name}"][1] for name in report.class_names] for group in done],
            path,
        ),
    }
    if num_images > 0:
        drawers["predictions"] = lambda path: _predictions(report, plots, path, num_images)
    for name, draw in drawers.items():
        path = report.sweep_dir / f"{name}.png"
        try:
            if draw(path) is not None:
                report.paths[name] = path
        except Exception as error:  # a plot that fails must not cost the table
            log.warning("%s not drawn", path, exc_info=True)
            report.notes.append(f"{path.name} not drawn: {type(error).__name__}: {error}")


def _predictions(report: Report, plots: Any, path: Path, num_images: int) -> Path | None:
    """Each group's best run (highest best val mIoU among jobs with a checkpoint) on the same test scenes."""
    runs = {}
    for group in report.groups:
        candidates = [job for job in group.finished if job.has_checkpoint]
        if candidates:
            best = max(
                candidates, key=lambda job: _nan_to(float((job.metrics.get("best") or {}).get("val/mIoU") or math.nan), -1.0)
            )
            runs[f"{group.label}\n({SEED_KEY}={best.overrides[SEED_KEY]})" if SEED_KEY in best.overrides else group.label] = (
                best.path
            )
        elif group.finished:
            report.notes.append(f"predictions.png: `{group.label}` left out, none of its jobs has checkpoints/best.ckpt")
    if not runs:
        return None
    drawn, notes = plots.predictions(runs, path, num_images)
    report.notes.extend(f"predictions.png: {note}" for note in notes)
    return drawn


def write_report(report: Report, num_images: int = 4, plots: bool = True) -> Report:
    """Draw the plots (unless ``plots`` is False), then write report.md and report.csv atomically."""
    if plots:
        _plots(report, num_images)
    report.paths["report.csv"] = write_text_atomic(report.sweep_dir / "report.csv", to_csv(report))
    report.paths["report.md"] = report.sweep_dir / "report.md"
    write_text_atomic(report.paths["report.md"], markdown(report))
    return report


def build_report(sweep_dir: str | Path, threshold: float | None = None, num_images: int = 4, plots: bool = True) -> Report:
    """Summarize the sweep dir and write report.md, report.csv and the PNG plots into it."""
    return write_report(summarize(sweep_dir, threshold), num_images=num_images, plots=plots)


# ---------------------------------------------------------------- entry points


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segsweep-report", description="Compare the groups of a multirun sweep dir.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir, e.g. outputs/train/multiruns/<date>_<time>")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"absolute val mIoU for convergence speed (default: {THRESHOLD_FRACTION:g} x the best val mIoU of any job)",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    parser.add_argument("--num-images", type=int, default=4, help="test scenes in predictions.png (default: 4)")
    args = parser.parse_args(argv)
    if args.num_images < 0:
        parser.error(f"--num-images must be >= 0, got {args.num_images}")
    try:
        report = build_report(args.sweep_dir, threshold=args.threshold, num_images=args.num_images, plots=args.plots)
    except ReportError as error:
        print(f"segsweep-report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"segsweep-report: error: cannot write the report into {args.sweep_dir}: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


class SweepReportCallback(Callback):
    """Hydra callback: writes and prints the sweep report when a multirun ends; never raises."""

    def __init__(self, threshold: float | None = None, num_images: int = 4, plots: bool = True) -> None:
        self.threshold, self.num_images, self.plots = threshold, num_images, plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = "<unknown>"
        try:
            sweep_dir = str(config.hydra.sweep.dir)
            report = build_report(sweep_dir, threshold=self.threshold, num_images=self.num_images, plots=self.plots)
            print_report(report)
        except ReportError as error:
            log.error("sweep report not written: %s", error)
        except Exception:
            log.exception("sweep report of %s failed (the jobs' results are untouched)", sweep_dir)


if __name__ == "__main__":
    sys.exit(main())
