"""PNG plots of a sweep report (arrays in, PNG out): curves, per-class IoU, differences, per-case, imbalance, predictions, search.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change)
and written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator, NullFormatter

from segsweep.runs.files import write_atomic
from segsweep.sweep.imbalance import RarityPoint
from segsweep.sweep.per_case import PerCase
from segsweep.sweep.search import SearchPlot

Curve = Sequence[tuple[int, float, int | None]]  # (epoch counted from 1, val mIoU, training images seen by then or None)


def _save(figure: Figure, path: Path, dpi: int = 100, bottom: float = 0.0) -> Path:
    """Laid out (``bottom``: the share of the height kept free, for a figure legend) and written as PNG."""
    FigureCanvasAgg(figure)
    figure.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    return write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=dpi))


class SeedBand(NamedTuple):
    """A group's learning curve over its seeds, per epoch with a value: the mean, the seeds' min and max, and the mean
    training images seen by then (seeds differ there only under a sampler whose epochs vary)."""

    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    images: np.ndarray


def seed_band(runs: Sequence[Curve]) -> SeedBand | None:
    """The seeds' curves of one group as a band; None when no epoch has a value."""
    by_epoch: dict[int, list[tuple[float, int]]] = {}
    for run in runs:
        for epoch, value, seen in run:
            if not math.isnan(value):
                by_epoch.setdefault(epoch, []).append((value, seen or 0))
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    values = [np.array([value for value, _ in by_epoch[epoch]]) for epoch in epochs]
    images = np.array([np.mean([seen for _, seen in by_epoch[epoch]]) for epoch in epochs])
    stats = (np.array([function(column) for column in values]) for function in (np.mean, np.min, np.max))
    return SeedBand(np.array(epochs, dtype=float), *stats, images)


def learning_curves(curves: Mapping[str, Sequence[Curve]], path: Path, threshold: float | None = None) -> Path:
    """Val mIoU of each group against epochs and, when every run counted them, training images seen: the mean over
    seeds as a line, the seeds' range (min to max) as a band, which stays inside what mIoU can be (a t band of the
    mean over 3 seeds reached 1.2 and -0.1)."""
    counted = all(image is not None for runs in curves.values() for run in runs for _, _, image in run)
    figure = Figure(figsize=(12 if counted else 7, 4.5))
    panels = figure.subplots(1, 2 if counted else 1, sharey=True, squeeze=False)[0]
    for label, runs in curves.items():
        band = seed_band(runs)
        if band is None:
            continue
        for axes, x in zip(panels, (band.epochs, band.images)):
            (line,) = axes.plot(x, band.mean, marker="o", markersize=3, label=f"{label} (n={len(runs)} seeds)")
            axes.fill_between(x, band.low, band.high, color=line.get_color(), alpha=0.2)
    for axes in panels:
        if threshold is not None and not math.isnan(threshold):
            axes.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
        axes.grid(alpha=0.3)
    panels[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    panels[0].set_xlabel("epoch (counted from 1)")
    panels[0].set_ylabel("val mIoU")
    panels[0].legend(fontsize="small")
    if counted:
        panels[1].set_xlabel("training images seen (a sampler's repeats counted)")
    figure.suptitle("Validation mIoU: mean over seeds, band = the seeds' range (min to max)", fontsize=11)
    return _save(figure, path)


def differences(
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    worse: Sequence[bool],
    best: str,
    path: Path,
) -> Path:
    """Forest plot: each group's paired difference of test mIoU to the best group, with its 95% interval; red where
    the verdict (family-wise, sweep/verdicts.py) is `worse`."""
    figure = Figure(figsize=(8, 1.6 + 0.45 * max(1, len(labels))))
    axes = figure.add_subplot()
    rows = np.arange(len(labels))[::-1]
    mean = np.asarray(means, dtype=float)
    low = np.nan_to_num(mean - np.asarray(lows, dtype=float))
    high = np.nan_to_num(np.asarray(highs, dtype=float) - mean)
    worse = np.asarray(worse, dtype=bool)
    axes.errorbar(mean, rows, xerr=[low, high], fmt="none", ecolor="grey", capsize=3)
    axes.scatter(mean, rows, c=np.where(worse, "tab:red", "tab:blue"), zorder=3)
    axes.axvline(0.0, color="black", linewidth=1)
    axes.set_yticks(rows, labels)
    axes.set_xlabel(f"test mIoU minus that of {best} (paired by seed)")
    axes.set_title(
        "Difference to the best group, 95% CI of each difference\n(red: `worse`, Holm-adjusted over all pairs)", fontsize=10
    )
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def per_class_figure(
    labels: Sequence[str], class_names: Sequence[str], means: Sequence[Sequence[float]], stds: Sequence[Sequence[float]]
) -> Figure:
    """Grouped bars: test IoU of each class (x) for each group (bars), error bars = std over seeds. Classes no group
    has a value for (absent from the test split) are left out; the width grows with the bars up to 16 inches; the
    legend sits right of the axes, off the bars."""
    mean = np.asarray(means, dtype=float).reshape(len(labels), len(class_names))
    std = np.nan_to_num(np.asarray(stds, dtype=float).reshape(mean.shape))
    present = [index for index in range(len(class_names)) if not np.isnan(mean[:, index]).all()]
    names, groups = [class_names[index] for index in present], max(1, len(labels))
    legend = min(5.0, 0.5 + 0.07 * max((len(label) for label in labels), default=0))  # inches, for the legend's text
    figure = Figure(figsize=(min(16.0, max(6.0, 1.5 + len(names) * (0.35 + 0.22 * groups) + legend)), 4.5))
    axes = figure.add_subplot()
    x, width = np.arange(len(names)), 0.8 / groups
    for index, label in enumerate(labels):
        axes.bar(
            x + (index - (groups - 1) / 2) * width, mean[index, present], width, yerr=std[index, present], capsize=3, label=label
        )
    slanted = len(names) > 6 or max((len(name) for name in names), default=0) > 10
    axes.set_xticks(x, names, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    axes.set_ylim(0, 1)
    axes.set_ylabel("test IoU")
    left_out = len(class_names) - len(names)
    absent = f"; {left_out} class(es) absent from the test split left out" if left_out else ""
    axes.set_title(f"Test IoU per class (mean over seeds, error bar = std{absent})")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    FigureCanvasAgg(figure).figure.tight_layout()  # `_save` lays it out again: the same result
    return figure


def per_class_iou(
    labels: Sequence[str],
    class_names: Sequence[str],
    means: Sequence[Sequence[float]],
    stds: Sequence[Sequence[float]],
    path: Path,
) -> Path:
    """per_class_iou.png: `per_class_figure`."""
    return _save(per_class_figure(labels, class_names, means, stds), path)


def per_case(cases: PerCase | None, path: Path) -> Path | None:
    """Box plots per group of its per-test-image mIoU (left) and of each image's paired difference to the best group
    of its stratum (right); None without per-image counts."""
    if cases is None:
        return None
    figure = Figure(figsize=(11, 1.6 + 0.45 * len(cases.labels)))
    left, right = figure.subplots(1, 2, sharey=True)
    rows = np.arange(len(cases.labels))[::-1] + 1
    finite = [values[~np.isnan(values)] for values in cases.miou]
    left.boxplot(finite, vert=False, positions=rows, widths=0.6, showmeans=True)
    left.set_xlabel("per-image test mIoU (mean over seeds)")
    left.set_title("Per-case distribution", fontsize=10)
    paired = [(row, diff[~np.isnan(diff)]) for row, diff in zip(rows, cases.diff) if diff is not None]
    if paired:
        right.boxplot([diff for _, diff in paired], vert=False, positions=[row for row, _ in paired], widths=0.6, showmeans=True)
    right.axvline(0.0, color="black", linewidth=1)
    left.set_yticks(rows, cases.labels)  # after both box plots: each sets the shared axis' ticks to its positions
    bests = sorted(set(cases.best))
    right.set_xlabel(f"per-image mIoU minus that of {bests[0] if len(bests) == 1 else 'the best group at its level'}")
    right.set_title("Paired per-case difference to the best group", fontsize=10)
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def prediction_grid(columns: Mapping[str, Sequence[np.ndarray]], legend: Sequence[tuple[str, Sequence[int]]], path: Path) -> Path:
    """Rows: images; columns: ``columns`` in order (uint8 [H,W,3] arrays each, any size: e.g. input, ground truth,
    one per run); below, the legend: (class name, RGB colour) of each class drawn."""
    rows = min(len(images) for images in columns.values())
    legend_rows = math.ceil(len(legend) / 6)
    figure = Figure(figsize=(1.8 * max(len(columns), 3), 1.8 * rows + 0.4 + 0.3 * legend_rows))
    grid = figure.subplots(rows, len(columns), squeeze=False)
    for column, (title, images) in enumerate(columns.items()):
        for row in range(rows):
            axes = grid[row, column]
            axes.imshow(images[row], interpolation="antialiased")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(title, fontsize="small")
    if legend:
        handles = [Patch(facecolor=np.asarray(color) / 255, edgecolor="black", label=name) for name, color in legend]
        figure.legend(handles=handles, loc="lower center", ncol=min(6, len(legend)), fontsize="small", frameon=False)
    return _save(figure, path, bottom=0.3 * legend_rows / figure.get_figheight() + (0.02 if legend else 0.0))


def confusion_matrix_png(counts: np.ndarray, share: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    """The confusion matrix as an annotated heat map: colour = ``share`` of the true class (row), text = share and count."""
    # ADE20K's 150 classes at 1.1 inch each would be a 20000 px square (GBs): capped, cells unannotated beyond 25
    annotated = len(class_names) <= 25
    size = 1.2 + 1.1 * len(class_names) if annotated else 30.0
    figure = Figure(figsize=(size + 1.2, size))
    axes = figure.add_subplot()
    shown = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=30 if annotated else 90, ha="right", fontsize=None if annotated else 5)
    axes.set_yticks(ticks, class_names, fontsize=None if annotated else 5)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=10)
    for i in ticks if annotated else ():
        for j in ticks:
            value = share[i, j]
            text = "n/a" if math.isnan(value) else f"{100 * value:.1f}%\n{int(counts[i, j]):,}"
            color = "white" if not math.isnan(value) and value > 0.5 else "black"
            axes.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    return _save(figure, path, dpi=120)


def imbalance(curves: Mapping[str, Sequence[RarityPoint]], rare_class: str, path: Path) -> Path:
    """Two panels against the rare class's share of training pixels (log axis, rarer to the left): its test IoU and the
    test mIoU, one line per strategy, error bars = 95% CI of the mean over seeds (sweep/intervals.py)."""
    figure = Figure(figsize=(11, 4.5))
    panels = figure.subplots(1, 2)
    ticks = sorted({round(point.pixel_share * 100, 4) for points in curves.values() for point in points if point.pixel_share > 0})
    for strategy, points in curves.items():
        share = np.array([point.pixel_share for point in points]) * 100
        for axes, value, interval in (
            (panels[0], [point.rare_iou for point in points], [point.rare_ci for point in points]),
            (panels[1], [point.miou for point in points], [point.miou_ci for point in points]),
        ):
            values = np.asarray(value, dtype=float)
            bounds = np.asarray(interval, dtype=float).reshape(-1, 2)
            errors = np.nan_to_num(np.abs(np.stack([values - bounds[:, 0], bounds[:, 1] - values])))
            axes.errorbar(share, values, yerr=errors, marker="o", markersize=4, capsize=3, label=strategy)
    for axes, ylabel in ((panels[0], f"test IoU {rare_class}"), (panels[1], "test mIoU")):
        axes.set_xscale("log")
        # ticks at the measured shares: a log axis spanning less than a decade would show almost none
        axes.set_xticks(ticks, [f"{tick:.2g}" for tick in ticks])
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(f"{rare_class} share of training pixels (%)")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3, which="both")
    panels[0].set_title(f"How each strategy holds up as {rare_class} gets rarer", fontsize=10)
    panels[1].set_title("Overall mIoU at each rarity", fontsize=10)
    panels[0].legend(fontsize="small")
    return _save(figure, path)


def search(data: SearchPlot, path: Path) -> Path:
    """A search: the objective per trial with the best so far, then the objective against each searched parameter."""
    panels = 1 + len(data.params)
    columns = panels if panels <= 3 else min(3, math.ceil(math.sqrt(panels)))  # 4 panels as 2 x 2
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.4 * columns, 3.6 * rows))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    first = grid[0]
    first.scatter(data.numbers, data.objectives, s=18, label="trial")
    first.step(data.numbers, data.best, where="post", color="tab:orange", label="best so far")
    first.xaxis.set_major_locator(MaxNLocator(integer=True))
    first.set_xlabel("trial (in the order they ran)")
    not_drawn = f" ({data.unranked} failed or unfinished: not drawn)" if data.unranked else ""
    first.set_title(f"objective per trial{not_drawn}", fontsize=10)
    first.legend(fontsize="small")
    for axes, (name, (scale, values)) in zip(grid[1:], data.params.items()):
        x = values
        if scale == "category":
            categories = sorted(set(values))
            x = [categories.index(value) for value in values]
            axes.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
            axes.set_xlim(-0.5, len(categories) - 0.5)
        elif scale == "log":
            axes.set_xscale("log")
            # matplotlib labels the minor ticks of a log axis up to about one decade: crowded in a panel this narrow
            axes.xaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(0.5, 0.5)))
            axes.tick_params(axis="x", which="both", labelsize="small")
        # colour = trial number: where the search went as it learned
        axes.scatter(x, data.objectives, c=data.numbers, cmap="viridis", s=18)
        axes.set_xlabel(name + (" (log)" if scale == "log" else ""))
        axes.set_title(f"objective against {name}", fontsize=10)
    for axes in grid[:panels]:
        axes.set_ylabel(data.metric)
        axes.grid(alpha=0.3)
    for axes in grid[panels:]:
        axes.set_visible(False)
    figure.suptitle("Hyperparameter search (parameter panels: colour = trial, dark early, yellow late)", fontsize=11)
    return _save(figure, path)
