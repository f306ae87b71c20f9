"""PNG plots of a sweep report: learning curves, per-class IoU bars, predictions of each group's best run.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend change)
and written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segsweep.files import write_atomic

Curve = Sequence[tuple[int, float]]  # (epoch counted from 1, val mIoU)


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=100))


def learning_curves(curves: Mapping[str, Sequence[Curve]], path: Path, threshold: float | None = None) -> Path:
    """Val mIoU per epoch of each group: the mean over seeds as a line, the min-max over seeds as a band."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for label, runs in curves.items():
        by_epoch: dict[int, list[float]] = {}
        for run in runs:
            for epoch, value in run:
                if not math.isnan(value):
                    by_epoch.setdefault(epoch, []).append(value)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        values = [np.asarray(by_epoch[epoch]) for epoch in epochs]
        (line,) = axes.plot(epochs, [v.mean() for v in values], marker="o", markersize=3, label=f"{label} (n={len(runs)})")
        axes.fill_between(epochs, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.2)
    if threshold is not None and not math.isnan(threshold):
        axes.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch (counted from 1)")
    axes.set_ylabel("val mIoU")
    axes.set_title("Validation mIoU: mean over seeds, band = min-max")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def per_class_iou(
    labels: Sequence[str],
    class_names: Sequence[str],
    means: Sequence[Sequence[float]],
    stds: Sequence[Sequence[float]],
    path: Path,
) -> Path:
    """Grouped bars: test IoU of each class (x) for each group (bars), error bars = std over seeds."""
    figure = Figure(figsize=(max(6.0, 1.2 * len(class_names) * max(1, len(labels)) ** 0.5 + 2), 4.5))
    axes = figure.add_subplot()
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(labels))
    for index, label in enumerate(labels):
        errors = np.nan_to_num(np.asarray(stds[index], dtype=float))
        axes.bar(x + (index - (len(labels) - 1) / 2) * width, means[index], width, yerr=errors, capsize=3, label=label)
    axes.set_xticks(x, class_names)
    axes.set_ylim(0, 1)
    axes.set_ylabel("test IoU")
    axes.set_title("Test IoU per class (mean over seeds, error bar = std)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


TEST_SCENE_KEYS = ("image_size", "test_size", "data_seed", "scene")


def predictions(runs: Mapping[str, Path], path: Path, num_images: int = 4) -> tuple[Path | None, list[str]]:
    """Rows: the first ``num_images`` test scenes; columns: input, ground truth, one prediction per run dir.

    Runs whose checkpoint does not load are left out; returns the path (None if nothing could be drawn)
    and one note per run left out.
    """
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segsweep.build import load_module
    from segsweep.visualize import overlay

    columns: dict[str, np.ndarray] = {}
    reference_key: str | None = None
    notes: list[str] = []
    datamodules: dict[str, Any] = {}
    for label, run_dir in runs.items():
        name = label.replace("\n", " ")
        try:
            module, cfg = load_module(run_dir)
            # runs that differ only in how they train (order seed, batch size, workers) share test scenes
            key = OmegaConf.to_yaml({name: cfg.data.get(name) for name in TEST_SCENE_KEYS})
            if key not in datamodules:
                datamodules[key] = instantiate(cfg.data)
                datamodules[key].setup("test")
            datamodule = datamodules[key]
            test = datamodule.splits["test"]
            images, masks = test.images[:num_images], test.masks[:num_images].long()
            with torch.inference_mode():
                predicted = module(images.float() / 255).argmax(1)
        except Exception as error:  # one unreadable run must not cost the others their column
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            notes.append(f"{name}: no predictions ({type(error).__name__}: {first_line})")
            continue
        if reference_key is None:
            reference_key = key
            columns["input"] = images.permute(0, 2, 3, 1).numpy()
            columns["ground truth"] = overlay(images, masks, datamodule.class_colors).permute(0, 2, 3, 1).numpy()
        elif key != reference_key:
            notes.append(f"{name}: its data config differs, so its column shows its own test scenes")
            label = f"{label}\n(own scenes)"
        columns[label] = overlay(images, predicted, datamodule.class_colors).permute(0, 2, 3, 1).numpy()
    if reference_key is None:
        return None, notes
    rows = min(len(images) for images in columns.values())
    figure = Figure(figsize=(1.8 * len(columns), 1.8 * rows + 0.4))
    grid = figure.subplots(rows, len(columns), squeeze=False)
    for column, (title, images) in enumerate(columns.items()):
        for row in range(rows):
            axes = grid[row, column]
            axes.imshow(images[row], interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(title, fontsize="small")
    return _save(figure, path), notes
