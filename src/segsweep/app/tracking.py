"""The experiment trackers (conf/logger): checked before work, a sweep as one MLflow experiment, its report attached.

A missing package or an unreachable server is one line before any work; a sweep's report is a parent run of its jobs.
"""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# a logger class -> the package it needs and the optional dependency group (pyproject.toml) that installs it
PACKAGES = {"MLFlowLogger": ("mlflow", "tracking"), "WandbLogger": ("wandb", "tracking")}
TIMEOUT_S = 5.0


def reachable(uri: str, timeout: float = TIMEOUT_S) -> str | None:
    """None when a tracking server answers at ``uri`` (MLflow's /health), else why not."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error))


def check_loggers(cfg: DictConfig) -> None:
    """Each configured logger's package is installed and its tracking server (an http(s) URI) answers."""
    # here: runs.cli imports torch and Lightning, and the resolvers (so a multirun's launching process) import this module
    from segsweep.runs.cli import UsageError

    loggers: Any = cfg.get("logger") or {}
    for name, node in loggers.items():
        target = str((node or {}).get("_target_", ""))
        package, extra = PACKAGES.get(target.rsplit(".", 1)[-1], (None, None))
        if package is not None and importlib.util.find_spec(package) is None:
            raise UsageError(f"logger.{name}: {target} needs {package}: pip install 'segsweep[{extra}]'")
        uri = str(node.get("tracking_uri") or "")
        if uri.startswith(("http://", "https://")) and (why := reachable(uri)) is not None:
            raise UsageError(f"logger.{name}.tracking_uri: no tracking server answers at {uri} ({why})")
        if package == "mlflow":
            _create_experiment(node)


def _create_experiment(node: Any) -> None:
    """The MLflow experiment, created once: a sweep's parallel jobs would each try to and all but one fail."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(node.get("tracking_uri"))
    if client.get_experiment_by_name(node.experiment_name) is None:
        try:
            client.create_experiment(node.experiment_name, artifact_location=node.get("artifact_location"))
        except MlflowException as error:  # another job created it first
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def experiment_name(task_name: str) -> str:
    """``segsweep_<task>`` for a single run; in a multirun the sweep dir's name, so a sweep is one MLflow experiment."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(str(HydraConfig.get().sweep.dir)).name
    return f"segsweep_{task_name}"


def mlflow_node(config: DictConfig) -> Any:
    """The config's MLflow logger node, or None."""
    loggers: Any = config.get("logger") or {}
    return next((node for node in loggers.values() if str((node or {}).get("_target_", "")).endswith("MLFlowLogger")), None)


def log_sweep_report(config: DictConfig, sweep_dir: Path, files: list[Path]) -> str | None:
    """With an MLflow logger: the report's files as artifacts of a parent run named after the sweep, and the sweep's
    job runs (tagged with their run dirs) nested under it; returns the parent run's id (None without MLflow)."""
    node = mlflow_node(config)
    if node is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(node.get("tracking_uri"))
    # the launcher process has no HydraConfig, so the default resolver cannot see the sweep here: its name is the dir's
    default = str(OmegaConf.to_container(node, resolve=False).get("experiment_name")).startswith("${tracking_experiment:")
    experiment = client.get_experiment_by_name(sweep_dir.name if default else str(node.experiment_name))
    if experiment is None:  # no job got as far as logging
        return None
    parent = client.create_run(experiment.experiment_id, run_name=f"report: {sweep_dir.name}", tags={"run_dir": str(sweep_dir)})
    for path in files:
        client.log_artifact(parent.info.run_id, str(path))
    prefix = f"{sweep_dir.resolve()}/"
    for run in client.search_runs([experiment.experiment_id]):
        if str(Path(run.data.tags.get("run_dir", "/")).resolve()).startswith(prefix):
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent.info.run_id)
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id
