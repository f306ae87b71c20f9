"""Sweep report entry point: ``segsweep-report SWEEP_DIR``, and the Hydra callback that writes it when a multirun ends.

``python -m segsweep.report SWEEP_DIR`` is the same; the callback is configured as ``hydra.callbacks.report``.

Reading, statistics, tables and plots live in ``segsweep.sweep``; this module adds what needs the models: each
group's best run predicting the same test scenes (predictions.png).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from segsweep.app.hydra_callbacks import sweep_unfinished
from segsweep.app.predictions import prediction_columns
from segsweep.app.tracking import log_sweep_report
from segsweep.runs.files import remove_orphan_temps, write_text_atomic
from segsweep.sweep.groups import Report
from segsweep.sweep.imbalance import rarity_curves
from segsweep.sweep.jobs import SEED_KEY, ReportError
from segsweep.sweep.per_case import per_case
from segsweep.sweep.search import Search, markdown_section, plot_data, read_search, rich_top_trials, shown_label
from segsweep.sweep.stats import THRESHOLD_FRACTION, nan_to
from segsweep.sweep.summary import summarize
from segsweep.sweep.tables import markdown, print_report, to_csv

log = logging.getLogger(__name__)

# the predictions of the best runs so far (app/predictions.py), computed in a thread while a multirun's last jobs run
_PREPARING: list[threading.Thread] = []


def _plots(report: Report, num_images: int, search: Search | None) -> None:
    # matplotlib (1.2-1.4 s) imported when a report draws: a multirun's launching process imports this module
    # before it starts its workers (app/workers.py), and imports it here on the core the last jobs leave idle (_prepare)
    from segsweep.sweep import plots

    done = [group for group in report.groups if group.finished]
    if not done:
        return
    curves = {
        shown_label(group): [
            [
                (int(entry.get("epoch", index)), float(entry.get("val/mIoU", math.nan)), entry.get("images_seen"))
                for index, entry in enumerate(job.history, start=1)
            ]
            for job in group.finished
        ]
        for group in done
    }
    drawers = {
        "curves": lambda path: plots.learning_curves(curves, path, report.threshold),
        "per_class_iou": lambda path: plots.per_class_iou(
            [shown_label(group) for group in done],
            report.class_names,
            [[group.stats[f"test/iou/{name}"][0] for name in report.class_names] for group in done],
            [[group.stats[f"test/iou/{name}"][1] for name in report.class_names] for group in done],
            path,
        ),
    }
    drawers["per_case"] = lambda path: plots.per_case(per_case(report), path)
    if search is not None and (searched := plot_data(search)) is not None:
        drawers["search"] = lambda path: plots.search(searched, path)
    compared = [group for group in done if group.diff is not None]
    if compared:
        drawers["differences"] = lambda path: plots.differences(
            [shown_label(group) for group in compared],
            [group.diff.mean for group in compared],
            [group.diff.low for group in compared],
            [group.diff.high for group in compared],
            [group.verdict == "worse" for group in compared],
            f"the best group at the same {report.stratum_key}" if report.stratum_key else f"`{shown_label(report.groups[0])}`",
            path,
        )
    if report.stratum_key is not None and report.rare_class is not None:
        rarity = rarity_curves(report.groups, report.stratum_key, report.rare_class)
        drawers["imbalance"] = lambda path: plots.imbalance(rarity, report.rare_class, path)
    if num_images > 0:
        drawers["predictions"] = lambda path: _predictions(report, path, num_images)
    for name, draw in drawers.items():
        path = report.sweep_dir / f"{name}.png"
        try:
            if draw(path) is not None:
                report.paths[name] = path
        except Exception as error:  # a plot that fails must not cost the table
            log.warning("%s not drawn", path, exc_info=True)
            report.notes.append(f"{path.name} not drawn: {type(error).__name__}: {error}")


def _predictions(report: Report, path: Path, num_images: int) -> Path | None:
    """Each group's best run on the same test scenes (``_best_runs``)."""
    runs = _best_runs(report)
    if not runs:
        return None
    from segsweep.sweep import plots  # see _plots

    columns, notes, legend = prediction_columns(runs, num_images)
    report.notes.extend(f"predictions.png: {note}" for note in notes)
    return plots.prediction_grid(columns, legend, path) if columns else None


def _best_runs(report: Report) -> dict[str, Path]:
    """Each group's best run (highest best val mIoU among jobs with a checkpoint) by its column label; in a rarity
    sweep, the groups of the rarest level (the others have other scenes)."""
    runs = {}
    groups = report.groups
    if report.stratum_key is not None:
        rarest = report.groups[-1].params.get(report.stratum_key)
        groups = [group for group in groups if group.params.get(report.stratum_key) == rarest]
        report.notes.append(f"predictions.png: the groups of the rarest level, {report.stratum_key}={rarest}")
    for group in groups:
        candidates = [job for job in group.finished if job.has_checkpoint]
        label = shown_label(group)
        if candidates:
            best = max(
                candidates, key=lambda job: nan_to(float((job.metrics.get("best") or {}).get("val/mIoU") or math.nan), -1.0)
            )
            runs[f"{label}\n({SEED_KEY}={best.overrides[SEED_KEY]})" if SEED_KEY in best.overrides else label] = best.path
        elif group.finished:
            report.notes.append(f"predictions.png: `{label}` left out, none of its jobs has checkpoints/best.ckpt")
    return runs


def write_report(report: Report, num_images: int = 4, plots: bool = True) -> Report:
    """Draw the plots (unless ``plots`` is False), then write report.md (a search's top trials too), report.csv atomically."""
    for orphan in remove_orphan_temps(report.sweep_dir):  # left by a report killed mid-write; no job writes here
        log.info("removed %s, left by an interrupted write", orphan)
    search = read_search(report)
    if plots:
        _plots(report, num_images, search)
    report.paths["report.csv"] = write_text_atomic(report.sweep_dir / "report.csv", to_csv(report))
    report.paths["report.md"] = report.sweep_dir / "report.md"
    write_text_atomic(report.paths["report.md"], markdown(report, markdown_section(search) if search else ()))
    return report


def show_report(report: Report) -> None:
    """Print the report's table, a search's top trials, the failed jobs and where the files are."""
    search = read_search(report)
    print_report(report, tables=[rich_top_trials(search)] if search else ())


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
    show_report(report)
    return 0


def _prepare(sweep_dir: str, num_images: int) -> None:
    """What on_workers_idle starts: the plots' imports and the predictions of the sweep's best runs so far, kept
    (``_PREDICTED``)."""
    try:
        from segsweep.sweep import plots  # noqa: F401  (imported for _plots, on this idle core)

        prediction_columns(_best_runs(summarize(sweep_dir)), num_images)
    except Exception:  # the report does it all then
        log.debug("the report's predictions were not prepared", exc_info=True)


class SweepReportCallback(Callback):
    """Hydra callback: writes and prints the sweep report when a multirun ends; never raises."""

    def __init__(self, threshold: float | None = None, num_images: int = 4, plots: bool = True) -> None:
        self.threshold, self.num_images, self.plots = threshold, num_images, plots
        self._unfinished: DictConfig | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra calls on_multirun_end only when the sweep returns; a sweep ended by an error (a killed joblib
        # worker, an Optuna study stopped by failures, Ctrl-C) still gets the report of what finished, at exit.
        self._unfinished = config
        atexit.register(self._report_unfinished, os.getpid())

    def _report_unfinished(self, pid: int) -> None:
        if self._unfinished is None or os.getpid() != pid:  # a forked child inherits the atexit hook
            return
        config, self._unfinished = self._unfinished, None
        log.error(
            "the sweep stopped early: reporting the jobs that ran (the same command with hydra.sweep.dir=%s continues it)",
            config.hydra.sweep.dir,
        )
        self.on_multirun_end(config)

    def on_workers_idle(self, config: DictConfig, **kwargs: Any) -> None:
        """The launcher has no job left to start (app/idle_workers.py), so a core idles until the last jobs end: the
        report's imports and the finished groups' predictions are done there now rather than after them."""
        if self.plots and self.num_images > 0 and not _PREPARING:
            _PREPARING.append(threading.Thread(target=_prepare, args=(str(config.hydra.sweep.dir), self.num_images)))
            _PREPARING[0].start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._unfinished = None
        while _PREPARING:  # its predictions are what the report reuses
            _PREPARING.pop().join()
        sweep_dir = "<unknown>"
        try:
            sweep_dir = str(config.hydra.sweep.dir)
            report = build_report(sweep_dir, threshold=self.threshold, num_images=self.num_images, plots=self.plots)
            show_report(report)
            # a search's failed trials within max_failure_rate are its sweeper's to judge (past it, the sweeper exits 1)
            names = [job.name for job in report.failed] if read_search(report) is None else []
            sweep_unfinished(names)
            if names:  # the last line, and exit code 1 (app/preflight.checked_command): scripts and CI see it
                total = len({job.name for group in report.groups for job in group.jobs} | set(names))
                print(f"sweep failed: {len(names)} of {total} jobs did not finish ({', '.join(names)})", flush=True)
        except ReportError as error:
            log.error("sweep report not written: %s", error)
            return
        except Exception:
            log.exception("sweep report of %s failed (the jobs' results are untouched)", sweep_dir)
            return
        try:
            if log_sweep_report(config, report.sweep_dir, list(report.paths.values())) is not None:
                log.info("the report is logged to MLflow as the artifacts of the run 'report: %s'", report.sweep_dir.name)
        except Exception as error:  # a tracker that fails now loses nothing: the report is written in the sweep dir
            log.error("the report is in %s but was not logged to MLflow: %s", sweep_dir, error)


if __name__ == "__main__":
    sys.exit(main())
