"""The experiment trackers (conf/logger) before any work: a missing package or an unreachable server in one line."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from typing import Any

from omegaconf import DictConfig

from segsweep.runs.cli import UsageError

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
