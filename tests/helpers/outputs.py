"""What runs and sweeps leave behind, for the tests: records read, job dirs listed or faked, reports and plots checked."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from PIL import Image

# the generated scenes' classes (segsweep.data.scenes.CLASS_NAMES), spelled out: the tests pin them
CLASSES = ("background", "road", "car", "pedestrian")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a multirun dir (those with a .hydra/), by name."""
    return sorted(path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir())


def fake_job(
    job_dir: Path,
    overrides: list[str],
    test_miou: float,
    curve: list[float],
    status: str = "completed",
    images_per_epoch: int | None = None,
) -> None:
    """A job dir as a multirun leaves it (overrides.yaml, metrics.json), without checkpoints; without
    ``images_per_epoch`` its history has no ``images_seen``, as runs from before they were counted."""
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    test = {"test/mIoU": test_miou, "test/pixel_acc": 0.9, "test/boundary_f1": 0.5, "test/loss": 0.3}
    test |= {f"test/iou/{name}": test_miou + 0.01 * index for index, name in enumerate(CLASSES)}
    history = [{"epoch": epoch, "val/mIoU": value, "time_s": 10.0 * epoch} for epoch, value in enumerate(curve, start=1)]
    if images_per_epoch is not None:
        history = [entry | {"images_seen": images_per_epoch * entry["epoch"]} for entry in history]
    metrics = {
        "status": status,
        "error": None,
        "config": {},
        "best": {"val/mIoU": max(curve), "epoch": curve.index(max(curve)) + 1},
        "test": test,
        "history": history,
    }
    (job_dir / "metrics.json").write_text(json.dumps(metrics))


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 200, (path, image.size)
        image.verify()


def top_trials_rows(report_md: str) -> list[list[str]]:
    """The cells of the "Top trials" table of a report.md, header first."""
    section = report_md.split("## Top trials", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip().strip("*") for cell in line.strip("|").split(" | ")] for line in lines]
