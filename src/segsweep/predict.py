"""Prediction entry point: ``python -m segsweep.predict ckpt_path=... input=...`` / ``segsweep-predict``.

``input`` is an image file, a folder (its images, sorted by name), a list of those, or
``generate`` (``count`` generated scenes of split "predict", ``size`` px, with ground truth: the first scenes in
which every class is visible).
Images larger than the training size are segmented by sliding-window inference over tiles of the
training size. For each image the run's output dir gets ``<name>_mask.png`` (the class indices as
an indexed PNG whose palette holds the class colours) and ``<name>_overlay.png`` (the mask blended over the image in
colours that stand out from it, above a legend of the classes shown); a generated scene
also gets ``<name>_image.png`` and ``<name>_truth.png``, and its mIoU. Everything is summarised in
``predictions.json``.

A bad input (unreadable, empty or non-image file, or more than ``max_pixels`` pixels, checked before decoding) is
one logged line naming the file; the other images are still processed and the exit code is 1. Every file is
written atomically.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor, nn

from segsweep.app.build import load_module
from segsweep.app.config import CONFIG_DIR
from segsweep.app.lifecycle import user_command
from segsweep.app.preflight import checked_command
from segsweep.app.resolvers import register_resolvers
from segsweep.app.sources import Source, collect_sources, every_class_scenes, name_outputs, parse_size
from segsweep.app.typecheck import ENTRY_POINT_TYPES, check_types
from segsweep.data.images import ImageError, palette_png, read_image, rgb_png
from segsweep.data.scenes import generate_scenes
from segsweep.inference import sliding_window_argmax, to_unit_float
from segsweep.models.metrics import confusion_matrix, iou_from_confusion
from segsweep.runs.checkpoint import resolve_checkpoint
from segsweep.runs.cli import configure_torch, json_safe, one_line, prepare_output_dir, require, resolve_device
from segsweep.runs.console import table_console
from segsweep.runs.files import write_files, write_json_atomic
from segsweep.runs.visualize import overlay, present, with_legend

log = logging.getLogger(__name__)
register_resolvers()


class Predictor:
    """The model of a checkpoint, segmenting [1,3,H,W] images in [0, 1] by sliding windows of the training size."""

    def __init__(self, cfg: DictConfig, module: nn.Module, roi: tuple[int, int], device: torch.device, progress: bool) -> None:
        self.cfg, self.module, self.roi, self.device = cfg, module.to(device).eval(), roi, device
        self.progress, self.tiles = progress, 0

    def _forward(self, tiles: Tensor) -> Tensor:
        self.tiles += tiles.shape[0]
        return self.module(to_unit_float(tiles))

    @torch.inference_mode()
    def __call__(self, image: Tensor) -> tuple[Tensor, int]:
        """Class-index mask [H,W] (uint8, on the CPU) and the number of tiles it took."""
        self.tiles = 0
        # uint8 in, class indices out: memory stays bounded by a stripe of tiles, whatever the image size
        labels = sliding_window_argmax(
            image.to(self.device)[None],
            self._forward,
            self.roi,
            overlap=self.cfg.overlap,
            mode=self.cfg.mode,
            tile_batch=self.cfg.tile_batch,
            progress=self.progress,
        )
        return labels[0].to(torch.uint8).cpu(), self.tiles


def predict_one(source: Source, predictor: Predictor, cfg: DictConfig, scene: dict[str, Any], context: dict[str, Any]) -> None:
    """Segment one source and write its files; fills ``source.result`` (status ok or failed, never raises ImageError)."""
    started = time.perf_counter()
    result: dict[str, Any] = {"input": source.label, "name": source.name}
    source.result = result
    output_dir: Path = context["output_dir"]
    colors, class_names = context["colors"], context["class_names"]
    truth = None
    try:
        if source.path is not None:
            image = read_image(source.path, cfg.max_pixels)
        else:
            images, truths = generate_scenes(
                scene["spec"], scene["seed"], "predict", torch.tensor([source.index]), *scene["size"]
            )
            image, truth = images[0], truths[0]
        height, width = image.shape[-2:]
        mask, tiles = predictor(image)
        files = {
            output_dir / f"{source.name}_mask.png": palette_png(mask, colors),
            output_dir / f"{source.name}_overlay.png": rgb_png(_overlay(image, mask, cfg.alpha, context)),
        }
        if truth is not None:
            files[output_dir / f"{source.name}_image.png"] = rgb_png(image)
            files[output_dir / f"{source.name}_truth.png"] = palette_png(truth, colors)
        try:
            written = write_files(files)
        except OSError as error:
            raise OSError(f"cannot write its outputs to {output_dir} ({error.strerror or error})") from None
        result.update(status="ok", error=None, size=[int(height), int(width)], tiles=tiles)
        result.update({key: str(path) for key, path in zip(("mask", "overlay", "image", "truth"), written)})
        if truth is not None:
            iou = iou_from_confusion(confusion_matrix(truth, mask, len(class_names), context["ignore_index"]))
            result["mIoU"] = float(iou.nanmean())
            result["iou"] = dict(zip(class_names, iou.tolist()))
            result["scene"] = {"seed": scene["seed"], "split": "predict", "index": source.index}
    except (ImageError, OSError, RuntimeError, ValueError) as error:
        message = str(error) if isinstance(error, ImageError) else f"{source.label}: {one_line(error)}"
        result.update(status="failed", error=message.strip().splitlines()[0])
        log.error("failed: %s", result["error"])
    result["time_s"] = round(time.perf_counter() - started, 3)


def _overlay(image: Tensor, mask: Tensor, alpha: float, context: dict[str, Any]) -> Tensor:
    """The mask blended over the image in the overlay palette, above a legend of the classes it shows."""
    colors, names = context["overlay_colors"], context["class_names"]
    blended = overlay(image[None], mask[None], colors, alpha)[0]
    return with_legend(blended, names, colors, present([mask], len(names)))


def print_summary(results: list[dict[str, Any]], class_names: list[str], console: Console) -> None:
    table = Table(title="predictions")
    scored = any("iou" in result for result in results)
    table.add_column("input", no_wrap=True, overflow="ellipsis", max_width=48)
    for column in ("size", "tiles", *(("mIoU", *class_names) if scored else ())):
        table.add_column(column, justify="right")
    table.add_column("status", no_wrap=True)
    for result in results:
        iou = result.get("iou", {})
        scores = (_fmt(result.get("mIoU")), *(_fmt(iou.get(name)) for name in class_names)) if scored else ()
        table.add_row(
            Path(result["input"]).name,
            "x".join(map(str, result["size"])) if "size" in result else "",
            str(result.get("tiles", "")),
            *scores,
            "ok" if result["status"] == "ok" else "FAILED",
        )
    console.print(table)


def _fmt(value: float | None) -> str:
    return "" if value is None else "-" if math.isnan(value) else f"{value:.4f}"


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Segment every input; returns the predictions.json content (``failed`` counts failed inputs)."""
    require(cfg, "ckpt_path", "input")
    configure_torch(cfg.get("threads"))
    if cfg.mode not in ("gaussian", "constant"):
        raise ValueError(f"mode must be gaussian or constant, got {cfg.mode!r}")
    if not 0 <= cfg.overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {cfg.overlap}")
    if not 0 <= cfg.alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {cfg.alpha}")
    if cfg.tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {cfg.tile_batch}")
    if cfg.max_pixels is not None and (type(cfg.max_pixels) is not int or cfg.max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or null (no limit), got {cfg.max_pixels!r}")
    failures: list[dict[str, Any]] = []
    sources = collect_sources(cfg.input, cfg.count, failures)
    size = parse_size(cfg.size) if any(source.path is None for source in sources) else None
    device = resolve_device(cfg.device)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    output_dir = prepare_output_dir(Path(cfg.output_dir))
    for failure in failures:
        log.error("failed: %s", failure["error"])

    module, saved = load_module(checkpoint)
    image_size = saved.data.get("crop_size") or saved.data.image_size  # a folder's crops, or the scenes' size
    roi = (int(image_size), int(image_size))
    class_names = list(module.class_names)
    colors = list(module.classes.colors)
    scene: dict[str, Any] = {}
    if size is not None and saved.data.get("root"):
        raise ValueError(f"input=generate: {checkpoint} was trained on the folder {saved.data.root}, not on generated scenes")
    if size is not None:
        datamodule = instantiate(saved.data)  # its scene spec and data seed: scenes like the training ones
        seed = datamodule.data_seed if cfg.scene_seed is None else int(cfg.scene_seed)
        scene = {"spec": datamodule.spec, "seed": seed, "size": size}
        generated = [source for source in sources if source.path is None]
        indices = every_class_scenes(datamodule.spec, seed, len(generated), size, len(class_names))
        for source, index in zip(generated, indices):
            source.index = index
        name_outputs(sources)
    # progress bars are for terminals; piped or logged output gets the per-image log lines only
    show_progress = bool(cfg.progress) and sys.stdout.isatty()
    predictor = Predictor(cfg, module, roi, device, progress=show_progress)
    log.info(
        "%s: %d image(s), tiles of %dx%d (the training size), overlap %s, %s blending, on %s",
        checkpoint,
        len(sources),
        *roi,
        cfg.overlap,
        cfg.mode,
        device,
    )
    context = {
        "output_dir": output_dir,
        "colors": colors,
        "overlay_colors": list(module.classes.overlay_colors),
        "class_names": class_names,
        "ignore_index": module.classes.ignore_index,
    }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("images", total=len(sources))
        for source in sources:
            progress.update(task, description=source.name)
            predict_one(source, predictor, cfg, scene, context)
            if source.result["status"] == "ok":
                generated = f", mIoU {source.result['mIoU']:.4f}" if "mIoU" in source.result else ""
                log.info(
                    "%s: %s, %d tiles%s",
                    source.label,
                    "x".join(map(str, source.result["size"])),
                    source.result["tiles"],
                    generated,
                )
            progress.advance(task)
        progress.update(task, description="images")

    results = failures + [source.result for source in sources]
    report = {
        "checkpoint": str(checkpoint),
        "roi_size": list(roi),
        "overlap": cfg.overlap,
        "mode": cfg.mode,
        "device": str(device),
        "class_names": class_names,
        "class_colors": [list(color) for color in colors],
        "failed": sum(result["status"] != "ok" for result in results),
        "predictions": results,
    }
    write_json_atomic(output_dir / "predictions.json", json_safe(report))
    print_summary(results, class_names, table_console())
    log.info("wrote %d of %d predictions to %s", len(results) - report["failed"], len(results), output_dir)
    return report


@checked_command("predict", "predict")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@user_command("predict")
def main(cfg: DictConfig) -> int | None:
    """Exit code 1 when any input failed (after the others were processed)."""
    check_types(cfg, ENTRY_POINT_TYPES["predict"])
    report = predict(cfg)
    if report["failed"]:
        log.error(
            "%d of %d inputs failed (see the lines above and predictions.json)", report["failed"], len(report["predictions"])
        )
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
