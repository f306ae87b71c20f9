"""The report's uncertainty in use: per-image counts, intervals, Holm-adjusted verdicts, adaptive designs, report.csv."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segsweep.models.image_counts import ImageIntersectionUnion
from segsweep.models.metrics import confusion_matrix, iou_from_confusion
from segsweep.runs.image_counts import ImageCountsError, read_image_counts, write_image_counts
from segsweep.sweep.adaptive import Design, check_stages, next_groups, read_design, write_design
from segsweep.sweep.intervals import SeedResult, group_estimate, metric_and_influence, paired_estimate
from segsweep.sweep.simulation import REGIMES, simulate_counts
from segsweep.sweep.summary import summarize
from segsweep.sweep.tables import to_csv
from segsweep.sweep.verdicts import compare_to_best, holm, seeds_needed, worse_flags

CLASSES = ["background", "road", "car", "pedestrian"]


def test_image_counts_sum_to_the_dataset_confusion_matrix():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (6, 20, 24), generator=generator)
    truth[:, :3] = 255  # ignored rows
    prediction = torch.randint(0, 4, (6, 20, 24), generator=generator)
    metric = ImageIntersectionUnion(4)
    metric.update(prediction[:4], truth[:4])
    metric.update(prediction[4:], truth[4:])
    intersection, union = metric.compute()
    assert intersection.shape == (6, 4)
    assert union.shape == (6, 4)
    from_images = intersection.sum(0).double() / union.sum(0).double()
    from_confusion = iou_from_confusion(confusion_matrix(truth, prediction, 4)).double()
    assert torch.allclose(from_images, from_confusion)


def test_image_counts_file_round_trip(tmp_path):
    intersection = np.arange(12).reshape(3, 4)
    write_image_counts(tmp_path, intersection, intersection + 5, CLASSES)
    counts = read_image_counts(tmp_path)
    assert counts is not None
    assert counts["classes"] == CLASSES
    assert (counts["union"] == intersection + 5).all()
    (tmp_path / "test_image_counts.npz").write_bytes(b"not a zip")
    with pytest.raises(ImageCountsError, match="unreadable"):
        read_image_counts(tmp_path)
    (tmp_path / "test_image_counts.npz").unlink()
    assert read_image_counts(tmp_path) is None


def _counts(per_image_iou: list[float], pixels: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """One class per image whose IoU is known: intersection = iou * union."""
    union = np.full((len(per_image_iou), 1), pixels)
    return np.round(np.asarray(per_image_iou)[:, None] * pixels).astype(np.int64), union


def _seeds(values_by_seed: dict[str, list[float]]) -> dict[str, SeedResult]:
    results = {}
    for seed, ious in values_by_seed.items():
        intersection, union = _counts(ious)
        results[seed] = SeedResult(seed, float(intersection.sum() / union.sum()), intersection, union)
    return results


def test_a_clear_lead_is_worse_beyond_the_uncertainty():
    best = _seeds({"1": [0.9, 0.92, 0.88, 0.91], "2": [0.91, 0.9, 0.89, 0.9], "3": [0.9, 0.9, 0.9, 0.92]})
    other = _seeds({"1": [0.7, 0.72, 0.68, 0.71], "2": [0.69, 0.7, 0.7, 0.71], "3": [0.72, 0.7, 0.7, 0.69]})
    diff = paired_estimate(other, best)
    assert diff is not None
    assert diff.mean == pytest.approx(-0.2, abs=0.01)
    assert diff.high < 0
    [(estimate, p_holm, verdict)] = compare_to_best([best, other])
    assert verdict == "worse" and p_holm < 0.05 and estimate.mean == diff.mean
    group = group_estimate(best)
    assert group.low <= 0.9025 <= group.high  # the mean over the three seeds lies in its interval
    assert group.high - group.low < 0.05


def test_a_difference_within_the_noise_is_indistinguishable_and_more_seeds_are_suggested():
    best = _seeds({"1": [0.8, 0.9], "2": [0.7, 0.6], "3": [0.9, 0.8]})
    other = _seeds({"1": [0.78, 0.86], "2": [0.72, 0.66], "3": [0.86, 0.8]})
    [(diff, _, verdict)] = compare_to_best([best, other])
    assert diff.low < 0 < diff.high
    assert verdict == "indistinguishable"
    needed = seeds_needed(diff, comparisons=1)
    assert needed is None or needed > 3
    steady = paired_estimate(_seeds({"1": [0.5], "2": [0.6], "3": [0.7]}), _seeds({"1": [0.52], "2": [0.63], "3": [0.725]}))
    assert seeds_needed(steady, comparisons=1) == 3
    assert seeds_needed(paired_estimate(_seeds({"1": [0.5]}), _seeds({"1": [0.6]})), comparisons=1) is None


def test_one_seed_has_no_interval_with_or_without_counts():
    only = _seeds({"1": [0.5, 0.9, 0.7, 0.6, 0.8]})
    assert math.isnan(group_estimate(only).low)  # training noise cannot be estimated from one run
    assert math.isnan(group_estimate({"1": SeedResult("1", 0.7)}).high)


def test_holm_adjusts_step_down_and_keeps_the_order():
    adjusted = holm(np.array([0.01, 0.04, 0.03, 0.005]))
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.2, np.nan])) == pytest.approx([0.4, 1.0])  # a comparison without an interval counts as 1
    np.testing.assert_allclose(holm(np.array([[0.01, 0.5], [0.5, 0.01]])), [[0.02, 0.5], [0.5, 0.02]])


def test_the_report_path_gives_the_verdicts_of_the_simulation_rule():
    intersection, union = simulate_counts(REGIMES["training noise dominant"], 6, 4, [0.0, 0.0, -0.4, -0.2], seed=3)
    values, influence = metric_and_influence(intersection, union)
    flags = worse_flags(values, influence)
    for study in range(6):
        groups = [
            {
                str(s): SeedResult(str(s), float(values[study, g, s]), intersection[study, g, s], union[study, g, s])
                for s in range(4)
            }
            for g in range(4)
        ]
        order = np.argsort(-values[study].mean(axis=-1), kind="stable")
        verdicts = compare_to_best([groups[g] for g in order])
        assert [verdict == "worse" for *_, verdict in verdicts] == list(flags[study, order[1:]])


def _job(
    sweep_dir: Path,
    loss: str,
    seed: int,
    per_image: list[list[float]],
    test: dict[str, float],
    overrides: list[str] | None = None,
    pixels: int = 100,
    train_pixels: list[float] | None = None,
) -> None:
    """A finished job with per-image counts: per_image[image][class] IoU, unions of ``pixels``; named by
    ``overrides`` (default ``loss=<loss>,seed=<seed>``)."""
    overrides = overrides or [f"loss={loss}", f"seed={seed}"]
    job = sweep_dir / ",".join(overrides)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    iou = np.asarray(per_image)
    write_image_counts(job, np.round(iou * pixels).astype(np.int64), np.full(iou.shape, pixels), CLASSES)
    record = {
        "status": "completed",
        "error": None,
        "config": {"seed": seed},
        "best": {"val/mIoU": 0.9, "epoch": 1},
        "test": test,
        "history": [{"epoch": 1, "val/mIoU": 0.9, "time_s": 1.0}],
        "classes": {
            "names": CLASSES,
            "colors": [[0, 0, 0]] * 4,
            "ignore_index": 255,
            "train_pixels": train_pixels or [50, 40, 30, 5],
        },
    }
    (job / "metrics.json").write_text(json.dumps(record))


def test_a_fabricated_sweep_gets_intervals_verdicts_and_nan_counts(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (1, 2, 3):
        good = np.clip(0.9 + rng.normal(0, 0.01, (8, 4)), 0, 1)
        bad = np.clip(0.6 + rng.normal(0, 0.01, (8, 4)), 0, 1)
        for loss, iou in (("dice", good), ("ce", bad)):
            test = {
                "test/mIoU": float(iou.mean()),
                **{f"test/iou/{name}": float(iou[:, i].mean()) for i, name in enumerate(CLASSES)},
            }
            if loss == "ce" and seed == 3:
                test["test/iou/pedestrian"] = math.nan
            _job(tmp_path, loss, seed, iou.tolist(), test)
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["loss=ce,dice", "seed=1,2,3"]}}}))
    report = summarize(tmp_path)
    best, other = report.groups
    assert best.label == "loss=dice"
    assert best.verdict == "best"
    assert other.verdict == "worse"
    assert report.rare_class == "pedestrian"  # fewest training pixels, as recorded
    assert other.counts["test/iou/pedestrian"] == 2
    assert "The lead is beyond the uncertainty" in report.headline
    assert "95% CI" in report.headline
    rows = list(csv.DictReader(to_csv(report).splitlines()))
    for column in (
        "test/mIoU_ci_low",
        "test/mIoU_ci_high",
        "diff_vs_best",
        "diff_vs_best_ci_low",
        "diff_vs_best_ci_high",
        "verdict",
    ):
        assert column in rows[0], column
    assert [row["verdict"] for row in rows] == ["best", "worse"]
    assert float(rows[1]["diff_vs_best_ci_high"]) < 0
    assert float(rows[0]["test/mIoU_ci_low"]) <= float(rows[0]["test/mIoU"]) <= float(rows[0]["test/mIoU_ci_high"])
    assert rows[1]["test/iou/pedestrian_n"] == "2"
    assert float(rows[1]["diff_vs_best_p_holm"]) <= 0.05


def test_an_undecided_sweep_suggests_a_rerun_command(tmp_path):
    for seed, (dice, ce) in zip((1, 2, 3), ((0.80, 0.78), (0.70, 0.73), (0.90, 0.86))):
        for loss, value in (("dice", dice), ("ce", ce)):
            iou = np.full((4, 4), value)
            _job(tmp_path, loss, seed, iou.tolist(), {"test/mIoU": value})
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["experiment=loss_comparison"]}}}))
    report = summarize(tmp_path)
    assert report.groups[1].verdict == "indistinguishable"
    assert "3 seeds cannot tell the two apart" in report.headline
    # per-seed differences -0.02, +0.03, -0.04: mean -0.01, std 0.036, so about 50 seeds
    assert 40 < report.seeds_suggested < 70
    assert f"seed=range(1,{report.seeds_suggested + 1})" in report.rerun_command
    assert f"hydra.sweep.dir={tmp_path}" in report.rerun_command
    assert report.rerun_command in report.headline


def test_a_two_axis_imbalance_sweep_compares_within_each_rarity_and_draws_imbalance_png(tmp_path):
    from segsweep.report import build_report

    shares = {"3pct": [60, 30, 9, 3], "0.3pct": [60, 30, 9, 0.3]}
    # ce loses the rare class as it gets rarer; dice holds up
    rare_iou = {("ce", "3pct"): 0.8, ("ce", "0.3pct"): 0.3, ("dice", "3pct"): 0.85, ("dice", "0.3pct"): 0.75}
    for (strategy, level), pedestrian in rare_iou.items():
        for seed in (1, 2):
            iou = np.full((6, 4), 0.95)
            iou[:, 3] = pedestrian + 0.01 * seed
            test = {"test/mIoU": float(iou.mean()), **{f"test/iou/{name}": float(iou[0, i]) for i, name in enumerate(CLASSES)}}
            overrides = [f"rarity={level}", f"strategy={strategy}", f"seed={seed}"]
            _job(tmp_path, strategy, seed, iou.tolist(), test, overrides, pixels=1000, train_pixels=shares[level])
    report = build_report(tmp_path, num_images=0)
    assert report.stratum_key == "rarity"
    verdicts = {group.label: group.verdict for group in report.groups}
    assert verdicts["rarity=3pct,strategy=dice"] == "best"
    assert verdicts["rarity=0.3pct,strategy=dice"] == "best"  # best within its own rarity level
    assert verdicts["rarity=0.3pct,strategy=ce"] == "worse"
    assert "Degrades least as pedestrian gets rarer: `strategy=dice`" in report.headline
    assert (tmp_path / "imbalance.png").is_file()
    assert "imbalance" in report.paths


def _documented_columns() -> list[re.Pattern]:
    """The column patterns of README's report.csv table (`<x>` stands for any name, `...` for the row's first)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### report.csv", 1)[1].split("\n## ", 1)[0]
    patterns = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", line.split("|")[1])
        for name in names:
            full = names[0] + name[3:] if name.startswith("...") else name
            patterns.append(re.compile(re.sub(r"<[^>]+>", ".+", re.escape(full).replace(r"\<", "<").replace(r"\>", ">")) + "$"))
    return patterns


def test_every_report_csv_column_is_documented_in_the_readme(tmp_path):

    for seed in (1, 2, 3):
        for loss, value in (("dice", 0.9), ("ce", 0.6)):
            iou = np.full((4, 4), value + 0.01 * seed)
            _job(tmp_path, loss, seed, iou.tolist(), {"test/mIoU": value + 0.01 * seed, "test/iou/pedestrian": value})

    write_design(tmp_path, Design(stages=[3, 5], alpha=0.05, looks_done=1, decided={"loss=ce": 3}, seeds={"loss=ce": 3}))
    report = summarize(tmp_path)
    assert report.rare_class == "pedestrian" and report.adaptive is not None
    columns = next(csv.reader(to_csv(report).splitlines()))
    patterns = _documented_columns()
    undocumented = [column for column in columns if not any(pattern.match(column) for pattern in patterns)]
    assert not undocumented
    assert read_design(tmp_path).decided == {"loss=ce": 3} and check_stages([3, 5]) == [3, 5]
    assert next_groups({"loss=dice": "best", "loss=ce": "worse"}, report.adaptive) == []
