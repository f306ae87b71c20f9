"""The sweep report: a real multirun and its report, failed/missing jobs, grouping, convergence, bad input."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from segsweep.report import SweepReportCallback, build_report, main
from segsweep.sweep.stats import convergence_epoch
from segsweep.sweep.summary import summarize

from .helpers.commands import run_module
from .helpers.outputs import CLASSES, assert_png, fake_job, read_metrics

JOBS = {"loss=ce,seed=1", "loss=ce,seed=2", "loss=dice,seed=1", "loss=dice,seed=2"}
# `trainer.max_epochs` is not one of conf/hydra/default.yaml's excluded keys; excluded here so jobs are named loss=...,seed=...
EXCLUDE = (
    "hydra.job.config.override_dirname.exclude_keys="
    "[experiment,debug,hparams_search,hydra/launcher,paths.log_dir,trainer,trainer.max_epochs]"
)
PNGS = ("curves.png", "per_class_iou.png", "predictions.png")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real 2 losses x 2 seeds multirun at debug=fast size; its report is written by the Hydra callback."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "multirun"
    result = run_module(
        "segsweep.train",
        "-m",
        "loss=ce,dice",
        "seed=1,2",
        "debug=fast",
        "trainer.max_epochs=2",
        EXCLUDE,
        f"hydra.sweep.dir={sweep_dir}",
    )
    return sweep_dir, result.stdout


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as file:
        return {row["group"]: row for row in csv.DictReader(file)}


def test_a_real_sweep_has_named_jobs_tensorboard_runs_and_a_report(sweep):
    sweep_dir, stdout = sweep
    assert {path.name for path in sweep_dir.iterdir() if path.is_dir()} == JOBS
    for name in JOBS:
        assert read_metrics(sweep_dir / name)["status"] == "completed"
        assert (sweep_dir / name / "checkpoints" / "best.ckpt").is_file()
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == JOBS  # one `tensorboard --logdir <sweep>` view, runs named by overrides

    # written by SweepReportCallback when the multirun ended, and printed
    assert "loss=dice" in stdout and "test" in stdout and "mIoU" in stdout
    rows = read_csv(sweep_dir / "report.csv")
    assert set(rows) == {"loss=ce", "loss=dice"}
    metrics = {name: read_metrics(sweep_dir / name) for name in JOBS}
    for group, row in rows.items():
        jobs = [metrics[f"{group},seed={seed}"] for seed in (1, 2)]
        assert (row["loss"], row["n_completed"], row["n_jobs"]) == (group.removeprefix("loss="), "2", "2")
        for name in ("mIoU", "pixel_acc", "boundary_f1", *(f"iou/{cls}" for cls in CLASSES)):
            mean, std = stats([job["test"][f"test/{name}"] for job in jobs])
            assert float(row[f"test/{name}"]) == pytest.approx(mean, rel=1e-12, abs=1e-12), name
            assert float(row[f"test/{name}_std"]) == pytest.approx(std, rel=1e-12, abs=1e-12), name
        wall = statistics.fmean(job["history"][-1]["time_s"] for job in jobs)
        assert float(row["wall_time_s"]) == pytest.approx(wall)
    ranked = sorted(rows.values(), key=lambda row: int(row["rank"]))
    assert float(ranked[0]["test/mIoU"]) >= float(ranked[1]["test/mIoU"])
    best_val = max(entry["val/mIoU"] for job in metrics.values() for entry in job["history"])
    assert float(ranked[0]["converge_threshold"]) == pytest.approx(0.9 * best_val)

    text = (sweep_dir / "report.md").read_text()
    winner, runner_up = ranked[0]["group"], ranked[1]["group"]
    assert text.splitlines()[2].startswith(f"`{winner}` has the best test mIoU") and f"runner-up `{runner_up}`" in text
    assert "Best on the rarest class (pedestrian)" in text and "| **" + winner + "** |" in text
    assert "None: every job finished." in text
    for png in PNGS:
        assert f"]({png})" in text
        assert_png(sweep_dir / png)
    assert not list(sweep_dir.glob(".*.tmp")), "atomic writes leave no temp files"


def test_the_cli_prints_the_table_and_rewrites_the_report(sweep):
    sweep_dir, _ = sweep
    (sweep_dir / "report.md").unlink()
    result = run_module("segsweep.report", str(sweep_dir), "--num-images", "2", "--threshold", "0.01")
    assert "loss=ce" in result.stdout and "loss=dice" in result.stdout and "best" in result.stdout
    assert "0.010" in result.stdout  # the convergence threshold in the header
    assert (sweep_dir / "report.md").is_file() and "threshold = set by hand (--threshold)" in (
        sweep_dir / "report.md"
    ).read_text()


def test_failed_and_missing_jobs_are_reported_and_the_rest_compared(sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweep[0], sweep_dir)
    failed = sweep_dir / "loss=ce,seed=1" / "metrics.json"
    failed.write_text(json.dumps(json.loads(failed.read_text()) | {"status": "failed", "error": "RuntimeError: boom"}))
    (sweep_dir / "loss=dice,seed=2" / "metrics.json").unlink()  # killed
    shutil.rmtree(sweep_dir / "loss=dice,seed=1" / "checkpoints")  # no checkpoint: left out of predictions.png

    report = build_report(sweep_dir, num_images=2)
    groups = {group.label: group for group in report.groups}
    assert set(groups) == {"loss=ce", "loss=dice"}
    for label, seed in (("loss=ce", 2), ("loss=dice", 1)):
        group = groups[label]
        assert (len(group.finished), len(group.jobs)) == (1, 2)
        mean, std = group.stats["test/mIoU"]
        assert mean == read_metrics(sweep_dir / f"{label},seed={seed}")["test"]["test/mIoU"] and math.isnan(std)
    assert {job.name for job in report.failed} == {"loss=ce,seed=1", "loss=dice,seed=2"}
    text = (sweep_dir / "report.md").read_text()
    assert "- `loss=ce,seed=1`: failed: RuntimeError: boom" in text
    assert "- `loss=dice,seed=2`: no metrics.json (killed, or still running)" in text
    assert "`loss=dice` left out, none of its jobs has checkpoints/best.ckpt" in text
    rows = read_csv(sweep_dir / "report.csv")
    assert rows["loss=ce"]["n_completed"] == "1" and rows["loss=ce"]["test/mIoU_std"] == ""
    for png in PNGS:
        assert_png(sweep_dir / png)


def test_convergence_epoch_counts_from_one_and_says_never():
    history = [
        {"epoch": 3, "val/mIoU": 0.7},
        {"epoch": 1, "val/mIoU": 0.2},
        {"epoch": 2, "val/mIoU": math.nan},
        {"epoch": 4, "val/mIoU": 0.6},
    ]
    assert convergence_epoch(history, 0.1) == 1
    assert convergence_epoch(history, 0.5) == 3  # first reached at the end of the third epoch
    assert convergence_epoch(history, 0.7) == 3
    assert convergence_epoch(history, 0.71) is None
    assert convergence_epoch([], 0.1) is None


def test_a_sweep_over_the_learning_rate_is_grouped_by_it(tmp_path):
    curves = {"0.001": [0.3, 0.5, 0.6], "0.01": [0.5, 0.9, 1.0]}
    results = {"0.001": [0.50, 0.54, 0.52], "0.01": [0.70, 0.80, 0.75]}
    for number, (lr, seed) in enumerate((lr, seed) for lr in curves for seed in (1, 2, 3)):
        fake_job(
            tmp_path / str(number),
            ["experiment=loss_comparison", f"optimizer.lr={lr}", f"seed={seed}", "debug=fast"],
            results[lr][seed - 1],
            curves[lr],
        )
    report = build_report(tmp_path)  # plots on: no checkpoints, so predictions.png is skipped with a note
    assert report.swept == ["optimizer.lr"]
    assert [group.label for group in report.groups] == ["optimizer.lr=0.01", "optimizer.lr=0.001"]
    for group in report.groups:
        lr = group.params["optimizer.lr"]
        assert group.stats["test/mIoU"] == pytest.approx(stats(results[lr]))
        assert group.stats["test/iou/pedestrian"] == pytest.approx(stats([value + 0.03 for value in results[lr]]))
        assert group.stats["wall_time_s"][0] == pytest.approx(30.0)
    assert report.threshold == pytest.approx(0.9)  # 0.9 x the best val mIoU of any job
    fast, slow = report.groups
    assert fast.converge_epochs == [2, 2, 2] and slow.converge_epochs == [None, None, None]
    assert "Fastest to converge: `optimizer.lr=0.01`" in report.headline and "0.230 ahead of the runner-up" in report.headline
    assert "| optimizer.lr=0.001 | 3/3 | 0.520 ± 0.020 [" in (tmp_path / "report.md").read_text()
    assert "| never |" in (tmp_path / "report.md").read_text()
    assert {"curves", "per_class_iou"} <= set(report.paths) and "predictions" not in report.paths
    assert_png(tmp_path / "curves.png")

    only_seeds = tmp_path / "seeds"
    for seed in (1, 2):
        fake_job(only_seeds / f"seed={seed}", ["optimizer.lr=0.01", f"seed={seed}"], 0.5, [0.5])
    (group,) = summarize(only_seeds).groups
    assert group.label == "all jobs" and len(group.finished) == 2


@pytest.fixture
def sampler_sweep(tmp_path: Path) -> Path:
    """Two samplers x 2 seeds: repeat_factor reaches val mIoU 0.9 an epoch sooner, but after more training images."""
    epochs = {"uniform": ([0.5, 0.8, 0.9, 1.0], 100), "repeat_factor": ([0.6, 0.9, 0.95, 1.0], 160)}
    for sampler, (curve, images) in epochs.items():
        for seed in (1, 2):
            overrides = [f"data.sampler={sampler}", f"seed={seed}"]
            fake_job(tmp_path / f"{sampler},{seed}", overrides, 0.7 + 0.01 * seed, curve, images_per_epoch=images)
    return tmp_path


def test_images_to_threshold_are_a_report_csv_column(sampler_sweep):
    build_report(sampler_sweep, plots=False)
    rows = read_csv(sampler_sweep / "report.csv")
    assert {group: row["converge_images"] for group, row in rows.items()} == {
        "data.sampler=uniform": "300.0",
        "data.sampler=repeat_factor": "320.0",
    }


def test_images_to_threshold_are_a_report_md_column(sampler_sweep):
    build_report(sampler_sweep, plots=False)
    text = (sampler_sweep / "report.md").read_text()
    assert "| train images to val mIoU 0.900 |" in text
    assert "| 3.0 ± 0.0 | 300 ± 0 |" in text


def test_the_fastest_to_converge_is_ranked_by_images_seen(sampler_sweep):
    headline = build_report(sampler_sweep, plots=False).headline
    assert "Fastest to converge: `data.sampler=uniform` (val mIoU >= 0.900 after 3.0 epoch(s), 300 training images" in headline


def test_runs_without_images_seen_report_a_dash_and_rank_by_epochs(tmp_path):
    for lr, curve in (("0.01", [0.5, 0.9]), ("0.001", [0.9, 1.0])):
        fake_job(tmp_path / lr, [f"optimizer.lr={lr}", "seed=1"], 0.5, curve)
    report = build_report(tmp_path, plots=False)
    assert "Fastest to converge: `optimizer.lr=0.001` (val mIoU >= 0.900 after 1.0 epoch(s) on average)" in report.headline
    assert read_csv(tmp_path / "report.csv")["optimizer.lr=0.001"]["converge_images"] == ""
    assert "| 2.0 | - |" in (tmp_path / "report.md").read_text()


def test_bad_sweep_dirs_are_one_line_errors_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "no-such-sweep"
    result = run_module("segsweep.report", str(missing), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"segsweep-report: error: {missing}: no such directory"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(empty) in line and "no Hydra jobs found" in line


def test_the_hydra_callback_never_raises(tmp_path, caplog):
    callback = SweepReportCallback()
    with caplog.at_level(logging.ERROR, logger="segsweep.report"):
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "gone")}}}))
        callback.on_multirun_end(OmegaConf.create({}))  # no hydra node at all
        fake_job(tmp_path / "sweep" / "0", ["seed=1"], 0.5, [0.5])
        (tmp_path / "sweep" / "report.md").mkdir()  # writing report.md fails
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))
    messages = [record.getMessage() for record in caplog.records]
    assert any(str(tmp_path / "gone") in message and "no such directory" in message for message in messages)
    assert len(messages) == 3 and str(tmp_path / "sweep") in messages[2]


def test_predictions_prepared_while_the_last_jobs_run_are_reused_per_checkpoint(sweep, tmp_path, monkeypatch):
    import segsweep.app.build
    from segsweep import report
    from segsweep.app import predictions

    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir)
    report._prepare(str(sweep_dir), 2)  # what SweepReportCallback.on_workers_idle runs in its thread

    def unloadable(*args, **kwargs):
        raise RuntimeError("loaded again")

    monkeypatch.setattr(segsweep.app.build, "load_module", unloadable)
    reused = build_report(sweep_dir, num_images=2)
    assert "predictions" in reused.paths and not [note for note in reused.notes if "no predictions" in note]
    for best in sweep_dir.glob("*/checkpoints/best.ckpt"):  # checkpoints rewritten since: predicted again
        best.write_bytes(best.read_bytes())
    rewritten = build_report(sweep_dir, num_images=2)
    assert [note for note in rewritten.notes if "no predictions" in note and "loaded again" in note]
    assert not predictions._PREDICTED  # the old checkpoints' predictions are dropped, not kept for good
