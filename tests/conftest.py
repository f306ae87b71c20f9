"""Shared fixtures: compose the real Hydra configs into a tmp dir, run the real entry points."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from segsweep.app.compose import compose_config

from .helpers.commands import run_module


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, each worker (and every process its tests start) gets its share of the cores: OpenMP threads
    of several processes competing for the same cores wait on each other and run many times slower (BENCHMARKS.md)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # also with one worker: the share it states is what `threads: auto` takes (machine.auto_threads), so that runs a
    # test compares bit for bit get the same thread count whatever the load does between them
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


_share_cores_between_workers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip without a CUDA device (``scripts/gpu_check.py`` runs them where there is one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (scripts/gpu_check.py runs it on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(overrides, tmp_path / "run", config_name)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``debug=fast`` training run through Hydra, shared by the tests that inspect its outputs."""
    run_dir = tmp_path_factory.mktemp("fast") / "run"
    run_module("segsweep.train", "debug=fast", f"hydra.run.dir={run_dir}")
    return run_dir
