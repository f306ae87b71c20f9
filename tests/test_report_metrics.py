"""The literature's metrics in the report: mean and per-class Dice, and HD95 and NSD where the runs computed them."""

from __future__ import annotations

import csv
import json

from segsweep.report import build_report

from .helpers.outputs import CLASSES, fake_job


def sweep_with(tmp_path, surface: bool):
    """Two losses x two seeds; every run logs Dice, and HD95 and NSD when ``surface``."""
    for loss, base in (("ce", 0.6), ("dice", 0.8)):
        for seed in (1, 2):
            job = tmp_path / f"loss={loss},seed={seed}"
            fake_job(job, [f"loss={loss}", f"seed={seed}"], base + 0.01 * seed, [0.3, base])
            record = json.loads((job / "metrics.json").read_text())
            test = record["test"] | {"test/mDice": base + 0.05 + 0.01 * seed}
            test |= {f"test/dice/{name}": base + 0.02 * index for index, name in enumerate(CLASSES)}
            if surface:
                test |= {f"test/hd95/{name}": 10.0 - 5 * base + index for index, name in enumerate(CLASSES)}
                test |= {f"test/nsd/{name}": base - 0.01 * index for index, name in enumerate(CLASSES)}
            (job / "metrics.json").write_text(json.dumps(record | {"test": test}))
    return build_report(tmp_path, num_images=0)


def csv_rows(tmp_path) -> dict[str, dict[str, str]]:
    with (tmp_path / "report.csv").open() as file:
        return {row["group"]: row for row in csv.DictReader(file)}


def test_dice_hd95_and_nsd_are_summarised_per_class_in_the_csv_and_shown_in_report_md(tmp_path):
    sweep_with(tmp_path, surface=True)
    dice = csv_rows(tmp_path)["loss=dice"]
    assert abs(float(dice["test/mDice"]) - 0.865) < 1e-12 and dice["test/mDice_n"] == "2"
    assert abs(float(dice["test/dice/car"]) - 0.84) < 1e-12 and abs(float(dice["test/hd95/pedestrian"]) - 9.0) < 1e-12
    assert abs(float(dice["test/nsd/road"]) - 0.79) < 1e-12 and float(dice["test/nsd/road_std"]) == 0.0
    header = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| group"))
    assert "| mDice |" in header and "| HD95 car |" in header and "| NSD pedestrian |" in header
    # in the dataset's class order, after the IoU columns
    assert (
        header.index("IoU pedestrian") < header.index("mDice") < header.index("HD95 background") < header.index("NSD background")
    )


def test_runs_without_surface_metrics_have_no_hd95_or_nsd_columns(tmp_path):
    sweep_with(tmp_path, surface=False)
    columns = next(iter(csv_rows(tmp_path).values()))
    assert "test/mDice" in columns and "test/dice/pedestrian" in columns
    assert not [name for name in columns if "/hd95/" in name or "/nsd/" in name]
    assert "HD95" not in (tmp_path / "report.md").read_text()
