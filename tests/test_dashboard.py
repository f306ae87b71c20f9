"""optuna-dashboard (the `search` extra) reads a segsweep study's storage back over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from .helpers.servers import free_port


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def test_optuna_dashboard_serves_a_study_from_its_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="segsweep", storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True), n_trials=3)
    port = free_port()
    executable = Path(sys.executable).with_name("optuna-dashboard")  # its console script (it has no __main__)
    command = [str(executable), storage, "--host", "127.0.0.1", "--port", str(port)]
    dashboard = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            assert dashboard.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
            try:
                studies = get(port, "/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.5)
        (summary,) = studies
        assert summary["study_name"] == "segsweep" and summary["directions"] == ["maximize"]
        detail = get(port, f"/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == 3 and detail["best_trials"][0]["values"] == [study.best_value]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
