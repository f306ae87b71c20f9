"""Each run's predictions of its first test scenes, for a sweep report's predictions.png; kept per checkpoint file.

The report a multirun ends with reuses those computed while its last jobs ran (``report.SweepReportCallback``'s
``on_workers_idle``), when a core would otherwise idle. Torch and the models are imported by the functions: the
report's module is imported by a multirun's launching process, which should start its workers first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

# Runs that differ only in how they train (order seed, batch size, workers) share their test scenes.
TEST_DATA_KEYS = ("image_size", "test_size", "data_seed", "scene", "root")
# px: the longest side of an image in predictions.png (whole images, shrunk to fit its grid)
DISPLAY_SIZE = 384
# Each run's predictions by (run dir, images, checkpoint mtime and size): see the module's docstring
_PREDICTED: dict[tuple[str, int, int, int], tuple[Any, str, list[Any], list[Any]]] = {}


def prediction_columns(
    runs: Mapping[str, Path], num_images: int
) -> tuple[dict[str, list[np.ndarray]], list[str], list[tuple[str, tuple[int, int, int]]]]:
    """Columns of predictions.png: input, ground truth, then each run's prediction of the first ``num_images`` whole
    test images (segmented at full resolution as the test metrics were, shrunk to `DISPLAY_SIZE`: uint8 [h,w,3]
    arrays); and the legend, (name, overlay colour) of each class shown. Runs whose checkpoint does not load are
    left out, with a note."""
    from segsweep.runs.visualize import shrink

    columns: dict[str, list[np.ndarray]] = {}
    reference_key: str | None = None
    notes: list[str] = []
    datamodules: dict[str, Any] = {}
    shown: set[int] = set()
    kept: set[tuple[str, int, int, int]] = set()
    for label, run_dir in runs.items():
        name = label.replace("\n", " ")
        try:
            classes, key, pairs, predicted = _predicted(run_dir, num_images, datamodules, kept)
        except Exception as error:  # one unreadable run must not cost the others their column
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            notes.append(f"{name}: no predictions ({type(error).__name__}: {first_line})")
            continue
        if reference_key is None:
            reference_key = key
            columns["input"] = [shrink(image, DISPLAY_SIZE).permute(1, 2, 0).numpy() for image, _ in pairs]
            columns["ground truth"] = _overlays(pairs, [mask for _, mask in pairs], classes.overlay_colors, shown)
        elif key != reference_key:
            notes.append(f"{name}: its data config differs, so its column shows its own test images")
            label = f"{label}\n(own images)"
        columns[label] = _overlays(pairs, predicted, classes.overlay_colors, shown)
    # only this call's runs stay: a long-lived process (an adaptive sweep's) holds one report's predictions at most
    for stale in set(_PREDICTED) - kept:
        del _PREDICTED[stale]
    legend = [(classes.names[index], classes.overlay_colors[index]) for index in sorted(shown)] if columns else []
    return columns, notes, legend


def _predicted(
    run_dir: Path, num_images: int, datamodules: dict[str, Any], kept: set[tuple[str, int, int, int]]
) -> tuple[Any, str, list[Any], list[Any]]:
    """A run's classes, data key, first ``num_images`` test images and predicted masks; kept per checkpoint file
    (its key added to ``kept``)."""
    import torch
    from hydra.utils import instantiate

    from segsweep.app.build import load_module
    from segsweep.inference import to_unit_float
    from segsweep.runs.checkpoint import resolve_checkpoint

    stat = resolve_checkpoint(run_dir).stat()
    cached = (str(run_dir), num_images, stat.st_mtime_ns, stat.st_size)
    kept.add(cached)
    if cached not in _PREDICTED:
        module, cfg = load_module(run_dir)
        key = OmegaConf.to_yaml({key: cfg.data.get(key) for key in TEST_DATA_KEYS})
        if key not in datamodules:
            datamodules[key] = instantiate(cfg.data)
            datamodules[key].setup("test")
        pairs = datamodules[key].whole_images("test", num_images)
        with torch.inference_mode():
            predicted = [module.whole_image_logits(to_unit_float(image[None]))[0].argmax(0) for image, _ in pairs]
        _PREDICTED[cached] = (module.classes, key, pairs, predicted)
    return _PREDICTED[cached]


def _overlays(pairs: Sequence[tuple[Any, Any]], masks: Sequence[Any], colors: Sequence[Any], shown: set[int]) -> list[np.ndarray]:
    """Each mask over its image in the overlay colours, shrunk to `DISPLAY_SIZE` (uint8 [h,w,3]); adds the classes
    drawn to ``shown``."""
    from segsweep.runs.visualize import overlay, present, shrink

    shown.update(present(masks, len(colors)))
    drawn = (overlay(image[None], mask[None], colors)[0] for (image, _), mask in zip(pairs, masks))
    return [shrink(image, DISPLAY_SIZE).permute(1, 2, 0).numpy() for image in drawn]
