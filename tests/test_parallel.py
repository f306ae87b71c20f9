"""The default launcher of multiruns: processes x threads from the machine, passed to and recorded by every job."""

import json
import os
import subprocess
import sys

import pytest

from segsweep import machine
from segsweep.app import gpu_slots
from segsweep.app.parallel import GIB, Split, check_launcher, plan_jobs_per_gpu, plan_split, with_split
from segsweep.machine import Gpu

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


@pytest.mark.parametrize(
    ("jobs", "cores", "gpus", "per_gpu", "memory_gb", "processes", "expected"),
    [
        (15, 16, 1, 4, 100.0, "auto", (4, 4, 1, 4)),  # one GPU, 4 jobs on it, the cores shared out
        (15, 16, 2, 4, 100.0, "auto", (8, 2, 2, 4)),  # 2 GPUs x 4
        (15, 16, 2, 8, 100.0, "auto", (15, 1, 2, 8)),  # the jobs cap it: 8 + 7
        (3, 16, 2, 4, 100.0, "auto", (3, 5, 2, 2)),  # 3 jobs spread over the 2 GPUs: at most 2 on one
        (15, 4, 1, 8, 100.0, "auto", (4, 1, 1, 4)),  # a core for each process beyond the first per GPU
        (15, 2, 4, 8, 100.0, "auto", (4, 1, 4, 1)),  # fewer cores than GPUs: still one process per GPU, as before
        (15, 16, 1, 8, 5.0, "auto", (2, 8, 1, 2)),  # host memory caps it (2 GB a job)
        (15, 16, 2, 4, 100.0, 3, (3, 5, 2, 2)),  # processes given: shared out over the GPUs
        (15, 16, 1, 1, 100.0, 6, (6, 2, 1, 6)),
    ],
)
def test_the_split_packs_jobs_per_gpu_within_cores_and_memory(jobs, cores, gpus, per_gpu, memory_gb, processes, expected):
    split = plan_split(jobs, cores, gpus, int(memory_gb * GIB), 2.0, processes, per_gpu)
    assert (split.processes, split.threads, split.gpus, split.jobs_per_gpu) == expected
    assert split.jobs_per_gpu * split.gpus >= split.processes  # every process has a slot to claim (app/gpu_slots.py)


def fake_gpus(*free_gib: float) -> list[Gpu]:
    return [Gpu(index=index, name="Fake GPU", free=int(free * GIB), total=80 * GIB) for index, free in enumerate(free_gib)]


@pytest.mark.parametrize(
    ("setting", "free_gib", "footprint_gib", "maximum", "expected"),
    [
        ("auto", (78.0,), 1.5, 8, 8),  # a small job on an empty H100: the maximum
        ("auto", (78.0,), 1.5, 64, 41),  # floor(78 x 0.8 / 1.5)
        ("auto", (20.0, 30.0), 3.5, 8, 4),  # the GPU with the least free memory decides: floor(16 / 3.5)
        ("auto", (10.0,), 9.0, 8, 1),  # not even one fits the margin: one job, as without packing
        ("auto", (78.0,), None, 8, 1),  # nothing measured
        (3, (78.0,), 1.5, 8, 3),  # given: not planned
        (12, (78.0,), None, 8, 12),  # given beyond the maximum: the user's choice
    ],
)
def test_jobs_per_gpu_from_free_memory_and_the_footprint(setting, free_gib, footprint_gib, maximum, expected):
    footprint = None if footprint_gib is None else int(footprint_gib * GIB)
    assert plan_jobs_per_gpu(setting, fake_gpus(*free_gib), footprint, 0.8, maximum) == expected


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"jobs_per_gpu": 0}, "hydra.launcher.jobs_per_gpu must be 'auto' or an integer >= 1, got 0"),
        ({"jobs_per_gpu": "many"}, "hydra.launcher.jobs_per_gpu must be 'auto' or an integer >= 1, got 'many'"),
        ({"jobs_per_gpu": 2.5}, "hydra.launcher.jobs_per_gpu"),
        ({"jobs_per_gpu": True}, "hydra.launcher.jobs_per_gpu"),
        ({"max_jobs_per_gpu": 0}, "hydra.launcher.max_jobs_per_gpu must be an integer >= 1, got 0"),
        ({"gpu_memory_fraction": 1.5}, "hydra.launcher.gpu_memory_fraction must be a number in (0, 1], got 1.5"),
        ({"gpu_memory_fraction": 0}, "hydra.launcher.gpu_memory_fraction"),
    ],
)
def test_a_bad_packing_key_names_it(keys, named):
    with pytest.raises(ValueError) as raised:
        check_launcher(**keys)
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_the_split_names_its_packing_and_the_measured_footprint():
    split = plan_split(15, 16, 2, 100 * GIB, 2.0, "auto", 4, int(1.25 * GIB))
    measured = "(16 cores, 1.25 GiB of GPU memory a job (measured))"
    assert split.describe() == f"2 GPUs x 4 jobs each: 8 processes x 2 thread(s) {measured}"
    assert plan_split(1, 8, 1, None, 2.0, "auto", 1).describe() == "1 GPU x 1 job each: 1 process x 8 thread(s) (8 cores)"
    assert plan_split(4, 2).describe() == "2 processes x 1 thread(s) (2 cores)"  # the CPU's line as it was


def test_every_job_gets_the_thread_count_unless_the_command_gives_one():
    split = Split(processes=2, threads=1, cores=2)
    assert with_split(["loss=ce", "seed=1"], split) == ["loss=ce", "seed=1", "threads=1", "hydra.launcher.processes=2"]
    assert with_split(["threads=2", "seed=1"], split) == ["threads=2", "seed=1", "hydra.launcher.processes=2"]
    packed = plan_split(15, 16, 2, None, 2.0, "auto", 4)  # on GPUs: the slots a GPU has, for the workers to claim
    slots = ["hydra.launcher.processes=8", "hydra.launcher.jobs_per_gpu=4"]
    assert with_split(["seed=1"], packed) == ["seed=1", "threads=2", *slots]


CLAIM = """
import sys
from pathlib import Path
from segsweep.app.gpu_slots import claim_gpu
print(claim_gpu(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])), flush=True)
sys.stdin.read()  # holds its slot until its stdin closes
"""


def test_each_process_keeps_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_slots, "_claimed", {})
    assert gpu_slots.claim_gpu(2, 1, tmp_path) == (0, 0)
    assert gpu_slots.claim_gpu(2, 1, tmp_path) == (0, 0)  # the same process keeps its GPU for all its jobs
    assert gpu_slots.gpu_slot() == 0

    def other_process(gpu_count: int) -> str:
        command = [sys.executable, "-c", CLAIM, str(gpu_count), "1", str(tmp_path)]
        run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
        return run.stdout.strip()

    assert other_process(2) == "(1, 0)"  # GPU 0 is held by this process
    assert other_process(1) == "None"  # every GPU held: the caller shares them by job number
    gpu_slots._claimed["handle"].close()  # this process ends its claim
    assert other_process(1) == "(0, 0)"


def test_k_processes_per_gpu_each_hold_a_slot_of_their_own(tmp_path):
    """Four workers started at once on 2 GPUs x 2 slots: one slot each, two per GPU; a fifth finds none free."""

    def start() -> subprocess.Popen:
        command = [sys.executable, "-c", CLAIM, "2", "2", str(tmp_path)]
        return subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    workers = [start() for _ in range(4)]
    try:
        claims = [worker.stdout.readline().strip() for worker in workers]
        assert sorted(claims) == ["(0, 0)", "(0, 1)", "(1, 0)", "(1, 1)"]
        fifth = start()
        workers.append(fifth)
        assert fifth.stdout.readline().strip() == "None"  # (a slot is free again once its process ends: above)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.stdin.close()
                worker.wait(timeout=60)


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
        assert (manifest["gpu"], manifest["gpu_slot"], manifest["jobs_per_gpu"]) == (None, None, None)  # no GPU here
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
