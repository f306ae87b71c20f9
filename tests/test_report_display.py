"""What the report shows: console tables fitted to the terminal, rounded labels, per_class_iou.png sized to the classes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image
from rich.console import Console

from segsweep.report import write_report
from segsweep.sweep import plots
from segsweep.sweep.summary import summarize
from segsweep.sweep.tables import print_report

# Cityscapes' 19 trained classes; "rider" and "train" are absent from the fake test split (IoU NaN)
CITYSCAPES = (
    (
        "road sidewalk building wall fence pole traffic_light traffic_sign vegetation terrain sky person rider car truck bus "
        "train motorcycle bicycle"
    )
    .replace("_", " ")
    .split()
)
ABSENT = ("rider", "train")
LRS = (0.00204722352812965, 0.000412345678901234, 0.0131234567890123)  # as Optuna writes them


def _search_like_sweep(root: Path, classes: tuple[str, ...] | list[str] = CITYSCAPES, lrs: tuple[float, ...] = LRS) -> Path:
    """Groups of two seeds with long float overrides (an Optuna search) and a test IoU for each class."""
    for group, lr in enumerate(lrs):
        for seed in (1, 2):
            job = root / f"{group}_{seed}"
            (job / ".hydra").mkdir(parents=True)
            overrides = [f"optimizer.lr={lr}", f"optimizer.weight_decay={lr / 7}", f"seed={seed}"]
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            miou = 0.5 + 0.05 * group + 0.01 * seed
            test = {"test/mIoU": miou, "test/pixel_acc": 0.9, "test/boundary_f1": 0.5}
            test |= {f"test/iou/{name}": math.nan if name in ABSENT else miou + 0.01 * i for i, name in enumerate(classes)}
            history = [{"epoch": epoch, "val/mIoU": miou * (epoch + 1) / 3, "time_s": 10.0} for epoch in range(3)]
            record = {"status": "completed", "error": None, "config": {}, "best": {"val/mIoU": miou, "epoch": 2}}
            (job / "metrics.json").write_text(json.dumps(record | {"test": test, "history": history}))
    return root


def _printed(sweep_dir: Path, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    print_report(summarize(sweep_dir), console)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 120, 160])
def test_console_tables_of_a_19_class_search_fit_the_terminal_without_cutting_numbers(tmp_path, width):
    text = _printed(_search_like_sweep(tmp_path), width)
    tables = text.split("has the best test mIoU")[0]
    assert max(len(line.rstrip()) for line in tables.splitlines()) <= width
    words = set(tables.split())
    # every IoU and every class name is printed whole (none cut into `0.` / `615` or `bac/kgr/oun/d`)
    for index, name in enumerate(CITYSCAPES):
        assert set(name.split()) <= words, name
        if name not in ABSENT:
            assert {f"{0.5 + 0.05 * group + 0.015 + 0.01 * index:.3f}" for group in range(3)} <= words, name
    assert {"0.615", "0.565", "0.515", "0.007", "worse"} <= words


def test_per_class_tables_of_many_groups_are_split_to_fit(tmp_path):
    lrs = tuple(0.000123456789 * 1.7**index for index in range(14))
    text = _printed(_search_like_sweep(tmp_path, lrs=lrs), 80)
    tables = text.split("has the best test mIoU")[0]
    assert max(len(line.rstrip()) for line in tables.splitlines()) <= 80
    titles = " ".join(tables.split())
    assert "(columns: the groups 1 to 9 by rank)" in titles and "(columns: the groups 10 to 14 by rank)" in titles


def test_group_labels_and_the_headline_show_floats_at_4_significant_digits(tmp_path):
    sweep_dir = _search_like_sweep(tmp_path)
    text = " ".join(_printed(sweep_dir, 200).split())
    assert "0.0131234567890123" not in text and "0.00204722352812965" not in text
    assert "optimizer.lr=0.01312,optimizer.weight_decay=0.001875 has the best test mIoU" in text
    assert "runner-up optimizer.lr=0.0004123,optimizer.weight_decay=5.891e-05" in text
    # report.csv keeps the values in full
    csv_text = (write_report(summarize(sweep_dir), plots=False).sweep_dir / "report.csv").read_text()
    assert "optimizer.lr=0.0131234567890123" in csv_text


def test_a_table_that_fits_stays_one_table_with_the_classes_as_columns(tmp_path):
    classes = ["background", "road", "car", "pedestrian"]
    text = _printed(_search_like_sweep(tmp_path, classes), 240)
    header = next(line for line in text.splitlines() if "rank" in line)
    assert "Test IoU per class" not in text and "pedestrian" in text.split("rank")[0] + header


def _bars(classes: list[str], groups: int) -> tuple[list[str], list[list[float]], list[list[float]]]:
    labels = [f"loss=loss_number_{index},optimizer.lr=0.001" for index in range(groups)]
    means = [[math.nan if name in ABSENT else 0.5 + 0.02 * group for name in classes] for group in range(groups)]
    return labels, means, [[0.01] * len(classes) for _ in range(groups)]


@pytest.mark.parametrize(("classes", "groups"), [(CITYSCAPES, 3), (["background", "road", "car", "pedestrian"], 4)])
def test_per_class_iou_is_sized_to_the_classes_leaves_absent_ones_out_and_the_legend_off_the_bars(tmp_path, classes, groups):
    labels, means, stds = _bars(classes, groups)
    figure = plots.per_class_figure(labels, classes, means, stds)
    axes = figure.axes[0]
    assert [tick.get_text() for tick in axes.get_xticklabels()] == [name for name in classes if name not in ABSENT]
    renderer = figure.canvas.get_renderer()
    legend, frame, whole = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer), figure.bbox
    assert legend.x0 >= frame.x1  # beside the axes, not over the bars
    assert whole.x0 <= legend.x0 and legend.x1 <= whole.x1 and legend.y0 >= whole.y0 and legend.y1 <= whole.y1
    path = plots.per_class_iou(labels, classes, means, stds, tmp_path / "per_class_iou.png")
    with Image.open(path) as image:
        assert 600 <= image.width <= 1600, image.size
