"""Experiment tracking: CSV, MLflow (a local store, and a real server) and W&B (offline) beside TensorBoard."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segsweep.app.tracking import check_loggers, reachable
from segsweep.runs.cli import UsageError

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import job_dirs, read_metrics
from .helpers.servers import free_port

FAST = ["debug=fast", "trainer.max_epochs=2"]


def test_every_logger_at_once_records_params_metrics_per_epoch_and_final_metrics(tmp_path):
    run = tmp_path / "run"
    run_module("segsweep.train", *FAST, "logger=[many,wandb]", f"paths.log_dir={tmp_path / 'outputs'}", f"hydra.run.dir={run}")
    assert list(run.glob("events.out.tfevents.*"))  # TensorBoard, as before
    csv = (run / "metrics.csv").read_text().splitlines()
    assert "val/mIoU" in csv[0] and "test/mIoU" in csv[0] and len(csv) >= 3
    assert list((run / "wandb").glob("offline-run-*"))  # W&B offline: its files inside the run dir
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as db:
        (run_id, name), *others = db.execute("select run_uuid, name from runs").fetchall()
        params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
        steps = db.execute("select step from metrics where run_uuid=? and key='val/mIoU'", (run_id,)).fetchall()
        final = db.execute("select value from metrics where run_uuid=? and key='test/mIoU'", (run_id,)).fetchall()
    assert not others and name == run.name  # named as its run directory
    assert params["config/optimizer/lr"] and params["config/trainer/max_epochs"] == "2"  # the flattened config
    assert len(steps) == 2 and len(final) == 1  # val/mIoU every epoch, the test metrics at the end


def test_a_tracker_without_its_package_or_server_is_one_line(monkeypatch):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    assert reachable(f"http://127.0.0.1:{port}") is not None and time.monotonic() - started < 5
    mlflow = {"_target_": "pytorch_lightning.loggers.MLFlowLogger", "tracking_uri": f"http://127.0.0.1:{port}"}
    with pytest.raises(UsageError, match=rf"^logger.mlflow.tracking_uri: no tracking server answers at http://127.0.0.1:{port} "):
        check_loggers(OmegaConf.create({"logger": {"mlflow": mlflow}}))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    wandb = {"_target_": "pytorch_lightning.loggers.WandbLogger"}
    with pytest.raises(UsageError, match=r"^logger.wandb: .*WandbLogger needs wandb: pip install 'segsweep\[tracking\]'$"):
        check_loggers(OmegaConf.create({"logger": {"wandb": wandb}}))


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on loopback (its own sqlite store), stopped after the test; yields its URI and process."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        # the server's job runners (seven processes of 250 MB) are for MLflow's GenAI jobs: not what a run logs
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while reachable(uri, timeout=1) is not None:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield uri, server
    finally:
        stop(server, signal.SIGTERM)


def stop(server: subprocess.Popen, how: signal.Signals) -> None:
    """The server and every process it started (uvicorn, its job runners): its own session's process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, how)
    server.wait(timeout=30)


def test_a_sweep_logs_into_a_real_mlflow_server_run_by_run_with_its_report_attached(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, _ = mlflow_server
    sweep = tmp_path / "sweep"
    tracker = ("logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    run_module("segsweep.train", "-m", "seed=1,2", *FAST, *tracker, f"hydra.sweep.dir={sweep}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep")  # a sweep is one experiment, named as its sweep dir
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["report: sweep", "seed=1", "seed=2"]
    assert sorted(path.name for path in job_dirs(sweep)) == ["seed=1", "seed=2"]
    parent = runs.pop("report: sweep")
    assert all("test/mIoU" in run.data.metrics and run.data.params["config/seed"] in ("1", "2") for run in runs.values())
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in runs.values())
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.csv", "curves.png"} <= artifacts


def test_a_tracking_server_lost_mid_run_loses_none_of_the_runs_own_records(tmp_path, mlflow_server, monkeypatch):
    uri, server = mlflow_server
    run_dir = tmp_path / "run"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of retrying for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    command = [sys.executable, "-m", "segsweep.train", "debug=fast", "trainer.max_epochs=30", "logger=mlflow",
               f"logger.mlflow.tracking_uri={uri}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    train = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # the first epoch is saved: lose the server now
        assert train.poll() is None and time.monotonic() < deadline, train.stdout.read()
        time.sleep(0.2)
    stop(server, signal.SIGKILL)
    output, _ = train.communicate(timeout=300)
    assert train.returncode == 1, output
    record = read_metrics(run_dir)
    assert record["status"] == "failed" and record["history"], record["error"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # the run continues from its own records without the tracker
    run_module("segsweep.train", f"ckpt_path={run_dir}", "logger=csv", "trainer.max_epochs=2")
    assert read_metrics(run_dir)["status"] == "completed"


@pytest.mark.parametrize("logger", ["csv", "mlflow", "wandb", "many"])
def test_each_logger_config_composes(make_config, logger, tmp_path):
    cfg = make_config(f"logger={logger}")
    assert Path(str(cfg.paths.output_dir)) == tmp_path / "run"
    assert set(cfg.logger) == ({"tensorboard", "csv", "mlflow"} if logger == "many" else {logger})
