"""The default launcher of multiruns: processes x threads from the machine, passed to and recorded by every job."""

import json
import os
import subprocess
import sys

import pytest

from segsweep import machine
from segsweep.app import launch
from segsweep.app.parallel import GIB, Split, plan_split, with_split

from .helpers.commands import REPO_ROOT, run_module


@pytest.mark.parametrize(
    ("jobs", "cores", "gpus", "memory_gb", "processes", "expected"),
    [
        (15, 2, 0, 23.0, "auto", (2, 1, 0)),  # this machine: the default sweep, 2 jobs at a time on 1 thread each
        (1, 2, 0, 23.0, "auto", (1, 2, 0)),  # one job: all cores
        (3, 8, 0, None, "auto", (3, 2, 0)),  # fewer jobs than cores: the cores shared out
        (15, 64, 0, 20.0, "auto", (10, 6, 0)),  # memory caps the processes (2 GB a job)
        (15, 32, 4, 200.0, "auto", (4, 8, 4)),  # one process per GPU
        (2, 32, 4, 200.0, "auto", (2, 16, 2)),
        (15, 2, 0, 1.0, "auto", (1, 2, 0)),  # too little memory for two: one at a time
        (15, 8, 0, None, 3, (3, 2, 0)),  # asked for
        (2, 8, 0, None, 3, (2, 4, 0)),
    ],
)
def test_the_split_uses_every_core_within_memory(jobs, cores, gpus, memory_gb, processes, expected):
    split = plan_split(jobs, cores, gpus, None if memory_gb is None else int(memory_gb * GIB), 2.0, processes)
    assert (split.processes, split.threads, split.gpus) == expected
    assert split.processes * split.threads <= max(cores, split.processes)


@pytest.mark.parametrize("processes", [0, -1, "many", True, 1.5])
def test_a_bad_process_count_names_the_key(processes):
    with pytest.raises(ValueError, match="hydra.launcher.processes"):
        plan_split(4, 2, processes=processes)


def test_every_job_gets_the_thread_count_unless_the_command_gives_one():
    split = Split(processes=2, threads=1, cores=2)
    assert with_split(["loss=ce", "seed=1"], split) == ["loss=ce", "seed=1", "threads=1", "hydra.launcher.processes=2"]
    assert with_split(["threads=2", "seed=1"], split) == ["threads=2", "seed=1", "hydra.launcher.processes=2"]


CLAIM = """
import sys
from pathlib import Path
from segsweep.app.launch import claim_gpu
print(claim_gpu(int(sys.argv[1]), Path(sys.argv[2])))
"""


def test_each_process_keeps_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "_claimed", {})
    assert launch.claim_gpu(2, tmp_path) == 0
    assert launch.claim_gpu(2, tmp_path) == 0  # the same process keeps its GPU for all its jobs

    def other_process(gpu_count: int) -> str:
        command = [sys.executable, "-c", CLAIM, str(gpu_count), str(tmp_path)]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()

    assert other_process(2) == "1"  # GPU 0 is held by this process
    assert other_process(1) == "None"  # every GPU held: the caller shares them by job number
    launch._claimed["handle"].close()  # this process ends its claim
    assert other_process(1) == "0"


@pytest.mark.slow
def test_a_sweep_runs_its_jobs_side_by_side_and_records_the_split(tmp_path):
    sweep = tmp_path / "sweep"
    # OMP_NUM_THREADS is unset as on a user's machine (pytest-xdist sets it to each worker's share of the cores)
    result = run_module("segsweep.train", "-m", "debug=fast", "seed=1,2", f"hydra.sweep.dir={sweep}", unset=("OMP_NUM_THREADS",))
    split = plan_split(2, len(os.sched_getaffinity(0)), memory=machine.available_memory())
    assert f"Launching 2 job(s): {split.describe()}" in result.stdout + result.stderr
    for seed in (1, 2):
        job = sweep / f"seed={seed}"  # named by the swept key only: threads= is left out
        manifest = json.loads((job / "metrics.json").read_text())["manifest"]
        assert manifest["torch_threads"] == split.threads
        assert manifest["parallel_processes"] == split.processes
        assert manifest["launcher"] == "parallel" and manifest["channels_last"] is True
        assert f"threads={split.threads}" in (job / ".hydra" / "overrides.yaml").read_text()
    assert (sweep / "report.md").is_file()


def test_batches_are_pinned_only_for_a_cuda_trainer():
    from types import SimpleNamespace

    import torch

    from segsweep.data.loaders import pin_memory
    from segsweep.data.scenes_datamodule import SceneDataModule

    def trainer_on(device: str) -> SimpleNamespace:
        return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))

    assert pin_memory(trainer_on("cuda:1")) and not pin_memory(trainer_on("cpu")) and not pin_memory(None)
    datamodule = SceneDataModule(image_size=16, train_size=4, val_size=2, test_size=2, batch_size=2)
    datamodule.setup("fit")
    assert datamodule.train_dataloader().pin_memory is False  # no trainer, or a CPU one: nothing to pin for
