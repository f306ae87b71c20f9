"""Resuming a run dir continues that run (its own config and records); later commands never erase a finished run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from segsweep.app.lifecycle import record_failure, training_command
from segsweep.app.resume import run_threads
from segsweep.app.rundir import has_run_records
from segsweep.runs.callbacks.metrics_file import MetricsFile
from segsweep.runs.callbacks.progress_bar import EpochProgressBar
from segsweep.runs.record import failed_record, load_record, record_path, write_record

from .helpers.commands import REPO_ROOT, error_lines, run_module
from .helpers.outputs import read_metrics

# The run's own overrides: none of them is a default, so a resume that fell back to the defaults would show.
ORIGINAL = ["debug=fast", "data.train_size=24", "trainer.max_epochs=2", "callbacks.rich_progress_bar=null"]


def train(run_dir: Path, *args: str, check: bool = True):
    """A training command in ``run_dir`` (``ckpt_path=<run dir>`` puts it there by itself)."""
    where = [] if any(arg.startswith("ckpt_path=") for arg in args) else [f"hydra.run.dir={run_dir}"]
    return run_module("segsweep.train", *args, *where, check=check)


def records(run_dir: Path) -> dict[str, bytes]:
    """The first command's Hydra records, byte for byte."""
    return {path.name: path.read_bytes() for path in sorted((run_dir / ".hydra").glob("*.yaml"))}


def epoch_of(run_dir: Path, name: str) -> int:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True, map_location="cpu")["epoch"]


@pytest.mark.slow
def test_resuming_a_run_dir_continues_that_run_with_its_own_config(tmp_path):
    run = tmp_path / "run"
    train(run, *ORIGINAL)
    kept = records(run)
    orphans = [run / "checkpoints" / ".last.ckpt.k1ll3d.tmp", run / ".metrics.json.x7q2.tmp"]
    for orphan in orphans:  # what a write killed before its rename leaves
        orphan.write_bytes(b"partial")

    result = train(run, f"ckpt_path={run}")  # no overrides: the run's own 24 images and 2 epochs, not the defaults
    assert "24 images per epoch" in result.stdout + result.stderr
    metrics = read_metrics(run)
    assert metrics["status"] == "completed"
    assert metrics["config"]["data"]["train_size"] == 24 and metrics["config"]["trainer"]["max_epochs"] == 2
    assert not any(orphan.exists() for orphan in orphans)

    train(run, f"ckpt_path={run}", "trainer.max_epochs=3", "threads=1")  # extending the run is allowed
    metrics = read_metrics(run)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]  # counted from 1
    assert metrics["config"]["trainer"]["max_epochs"] == 3 and metrics["config"]["data"]["train_size"] == 24
    assert epoch_of(run, "last.ckpt") == 2

    train(run, *ORIGINAL, "trainer.max_epochs=3", "resume=auto")  # a requeued job repeats its command: no change
    first, extended, requeued = read_metrics(run)["manifest"]["resumes"]
    assert first["overrides"] == [] and first["from_epoch"] == 3  # the first epoch it trains, counted from 1
    assert extended["overrides"] == ["trainer.max_epochs=3", "threads=1"] and extended["from_epoch"] == 3
    assert f"ckpt_path={run}" in extended["command"] and requeued["from_epoch"] == 4
    assert records(run) == kept, "the run's own .hydra records are never rewritten"
    later = sorted((run / ".hydra" / "resumes").iterdir())
    assert len(later) == 3 and all((path / "overrides.yaml").is_file() for path in later)


@pytest.mark.slow
def test_a_later_command_that_fails_keeps_the_completed_record(tmp_path):
    run = tmp_path / "run"
    train(run, *ORIGINAL)
    kept, before = records(run), read_metrics(run)
    commands = [
        ([f"ckpt_path={run}", "data.train_size=32"], "data.train_size=32"),  # would change the experiment
        ([f"ckpt_path={run}", "data.batch_size=0"], "data.batch_size=0"),
        ([*ORIGINAL], f"{run} holds a completed run"),  # a plain run into a finished run's dir
    ]
    for args, named in commands:
        result = train(run, *args, check=False)
        assert result.returncode == 1
        (line,) = error_lines(result, "failed:")
        assert named in line and "Traceback" not in result.stdout + result.stderr
    after = read_metrics(run)
    assert after["status"] == "completed" and after["error"] is None
    assert {key: after[key] for key in ("test", "best", "history", "config")} == {
        key: before[key] for key in ("test", "best", "history", "config")
    }
    attempts = after["failed_attempts"]
    assert [named in attempt["error"] for attempt, (_, named) in zip(attempts, commands)] == [True] * 3
    assert "ResumeError" in attempts[0]["error"] and attempts[0]["command"][-1] == "data.train_size=32"
    assert records(run) == kept


@pytest.mark.slow
def test_last_ckpt_is_written_every_epoch_even_without_improvement(tmp_path):
    run = tmp_path / "run"
    # lr 0 and no batch norm: the same weights every epoch, so val mIoU never improves after epoch 0
    train(run, *ORIGINAL, "trainer.max_epochs=3", "optimizer.lr=0", "model.batch_norm=false")
    assert epoch_of(run, "best.ckpt") == 0 and read_metrics(run)["best"]["epoch"] == 1  # Lightning's index, ours
    assert epoch_of(run, "last.ckpt") == 2
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_failure_inside_lightning_keeps_a_completed_record_and_is_recorded_once(tmp_path):
    completed = {**failed_record({"seed": 1}, ""), "status": "completed", "error": None, "test": {"test/mIoU": 0.5}}
    write_record(record_path(tmp_path), completed)
    callback = MetricsFile(str(tmp_path))
    error = RuntimeError("out of memory")
    trainer, module = SimpleNamespace(global_rank=0), SimpleNamespace(hparams={"config": {"seed": 2}})
    # the callback sees the failure first (inside Lightning), then the command's handler records it
    callback.on_exception(trainer, module, error)
    record_failure(tmp_path, OmegaConf.create({"seed": 2}), error)
    record = read_metrics(tmp_path)
    assert record["status"] == "completed" and record["test"] == {"test/mIoU": 0.5}
    (attempt,) = record["failed_attempts"]
    assert attempt["error"] == "RuntimeError: out of memory"


def test_a_failed_fit_keeps_its_history_and_its_first_error(tmp_path):
    callback = MetricsFile(str(tmp_path))
    callback.history = [{"epoch": 1, "val/mIoU": 0.25}]
    error = RuntimeError("out of memory")
    trainer, module = SimpleNamespace(global_rank=0), SimpleNamespace(hparams={"config": {"seed": 2}})
    callback.on_exception(trainer, module, error)
    record_failure(tmp_path, OmegaConf.create({"seed": 2}), ValueError("a second error"))
    record = read_metrics(tmp_path)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: out of memory"
    assert record["history"] == [{"epoch": 1, "val/mIoU": 0.25}] and record["best"] == {"val/mIoU": 0.25, "epoch": 1}
    assert "failed_attempts" not in record


def test_epochs_count_from_one_also_in_records_and_checkpoints_written_when_they_counted_from_0(tmp_path):
    old = {**failed_record({}, ""), "status": "fitted", "error": None, "best": {"val/mIoU": 0.5, "epoch": 1}}
    write_record(record_path(tmp_path), old | {"history": [{"epoch": 0, "val/mIoU": 0.25}, {"epoch": 1, "val/mIoU": 0.5}]})
    record = load_record(record_path(tmp_path))
    assert [entry["epoch"] for entry in record["history"]] == [1, 2] and record["best"] == {"val/mIoU": 0.5, "epoch": 2}
    callback = MetricsFile(str(tmp_path))
    callback.load_state_dict({"history": [{"epoch": 0}, {"epoch": 1}], "elapsed_s": 1.0})  # an older last.ckpt
    assert [entry["epoch"] for entry in callback.history] == [1, 2]
    callback.on_validation_end(SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), current_epoch=2,
                                               callback_metrics={}, global_step=3), None)  # fmt: skip
    assert [entry["epoch"] for entry in callback.history] == [1, 2, 3]


def test_a_continued_run_with_threads_auto_keeps_the_count_its_first_command_chose(tmp_path):
    write_record(record_path(tmp_path), {**failed_record({}, ""), "manifest": {"torch_threads": 1}})
    auto, fixed = OmegaConf.create({"threads": "auto"}), OmegaConf.create({"threads": 2})
    assert run_threads(auto, tmp_path, continued=True) == 1  # bit-identical continuation: the same count
    assert run_threads(auto, tmp_path, continued=False) == "auto" and run_threads(fixed, tmp_path, continued=True) == 2


def test_the_progress_bar_counts_epochs_from_one():
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=12)
    assert bar._get_train_description(0).strip() == "Epoch 1/12"  # Lightning's own: "Epoch 0/11"


def test_a_run_stopped_by_ctrl_c_in_its_test_is_recorded_failed_with_its_results(make_config, tmp_path):
    cfg = make_config("debug=fast")
    run_dir = tmp_path / "run"

    def fit_then_interrupted_test(cfg, datamodule, resume_overrides):
        fitted = {**failed_record({"seed": 1}, ""), "status": "fitted", "error": None, "history": [{"epoch": 1}]}
        write_record(record_path(run_dir), fitted)  # as MetricsFile writes it when the fit ends
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning does after its callbacks saw the interrupt

    with pytest.raises(SystemExit):
        training_command(cfg, fit_then_interrupted_test)
    record = read_metrics(run_dir)
    assert record["status"] == "failed" and record["error"] == "KeyboardInterrupt: " and record["history"] == [{"epoch": 1}]


@pytest.mark.slow
def test_a_sweep_sent_again_into_its_dir_skips_its_completed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    command = ["-m", *ORIGINAL, "seed=1", f"hydra.sweep.dir={sweep}"]
    run_module("segsweep.train", *command)
    (job,) = [path for path in sweep.iterdir() if (path / "metrics.json").is_file()]
    before = read_metrics(job)
    result = run_module("segsweep.train", *command)
    assert "skipped, already completed" in result.stdout + result.stderr
    assert read_metrics(job) == before


def test_a_run_terminated_by_sigterm_exits_143_and_records_why(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "segsweep.train", *ORIGINAL, "trainer.max_epochs=50", f"hydra.run.dir={run}"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]  # a scheduler sees the job did not succeed
    record = read_metrics(run)
    assert record["status"] == "failed" and record["error"] == "SIGTERMException: terminated by SIGTERM"
    assert record["history"]  # what it trained before the signal is kept


def untested_record(sweep: Path) -> Path | None:
    """A job whose metrics.json was written at the end of its fit and not yet by its test."""
    for path in sweep.glob("*/metrics.json"):
        try:
            if not json.loads(path.read_text())["test"]:
                return path.parent
        except (OSError, ValueError, KeyError):
            continue  # not written yet
    return None


@pytest.mark.slow
def test_a_sweep_job_killed_during_its_test_is_finished_by_running_the_sweep_again(tmp_path):
    sweep = tmp_path / "sweep"
    # a test split large enough that the kill lands in it
    command = ["-m", *ORIGINAL, "data.test_size=256", "trainer.limit_test_batches=null", "seed=1", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "segsweep.train", *command],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while untested_record(sweep) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    job = untested_record(sweep)
    assert job is not None and read_metrics(job)["status"] != "completed"  # completed means tested

    result = run_module("segsweep.train", *command)
    assert "skipped, already completed" not in result.stdout + result.stderr
    record = read_metrics(job)
    assert record["status"] == "completed" and 0 < record["test"]["test/mIoU"] <= 1
    assert [entry["epoch"] for entry in record["history"]] == [1, 2]  # finished, not trained again
    assert "None: every job finished." in (sweep / "report.md").read_text()


def test_records_cut_short_by_a_kill_are_not_a_run_to_continue(tmp_path):
    # a sweep worker killed while Hydra wrote the job's records: config.yaml written, hydra.yaml empty, no overrides.yaml
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (run_dir / ".hydra" / "hydra.yaml").write_text("")
    assert not has_run_records(run_dir)
    train(run_dir, *ORIGINAL)
    assert read_metrics(run_dir)["status"] == "completed"
    assert has_run_records(run_dir)
    assert not (run_dir / ".hydra" / "resumes").exists()  # the command that ran is the run's first
