"""Shared fixtures: compose the real Hydra configs into a tmp dir, run the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from segsweep.app.compose import compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, each worker (and every process its tests start) gets its share of the cores: OpenMP threads
    of several processes competing for the same cores wait on each other and run many times slower (BENCHMARKS.md)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_cores_between_workers()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(overrides, tmp_path / "run", config_name)

    yield make
    GlobalHydra.instance().clear()


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    timeout: int = 600,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``python -m module args`` in a subprocess, as a user would type it; ``unset``: environment variables it lacks."""
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``debug=fast`` training run through Hydra, shared by the tests that inspect its outputs."""
    run_dir = tmp_path_factory.mktemp("fast") / "run"
    run_module("segsweep.train", "debug=fast", f"hydra.run.dir={run_dir}")
    return run_dir
