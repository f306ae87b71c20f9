"""Several jobs per GPU: the launcher's plan from a faked GPU inventory and footprint, the footprint probe, the slot each
job's process binds to and the manifest recording it; the `gpu` tests run it for real where there is a GPU."""

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins import basic_launcher
from hydra.core.global_hydra import GlobalHydra

from hydra_plugins.segsweep_plugins.parallel_launcher import ParallelLauncher
from segsweep import machine
from segsweep.app import gpu_footprint, gpu_slots, launch
from segsweep.app.config import CONFIG_DIR
from segsweep.app.gpu_footprint import ONE_STEP, Footprint, FootprintError
from segsweep.app.parallel import GIB
from segsweep.app.preflight import composition_error
from segsweep.runs.manifest import manifest

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import job_dirs, read_metrics
from .test_machine import RecordingLauncher
from .test_parallel import fake_gpus

SMALL_GPU_STUDY = ["experiment=loss_comparison_gpu", "data.train_size=64", "data.val_size=32", "data.num_workers=0"]


@pytest.fixture
def gpu_host(monkeypatch, make_config):
    """A 16-core host with 100 GiB free and two GPUs (20 and 30 GiB free); the jobs' config is the GPU loss study's,
    and a probe that measures 3.5 GiB a job (the calls it gets are recorded)."""
    monkeypatch.setattr(machine, "available_cores", lambda: 16)
    monkeypatch.setattr(machine, "available_memory", lambda: 100 * GIB)
    monkeypatch.setattr(machine, "gpus", lambda: fake_gpus(20.0, 30.0))
    cfg = make_config("experiment=loss_comparison_gpu")
    monkeypatch.setattr(ParallelLauncher, "job_config", lambda self, overrides: cfg)
    probed = []

    def fake_measure(config, timeout_s):
        probed.append((config, timeout_s))
        return Footprint(peak_reserved=3 * GIB, context=GIB // 2, total_memory=80 * GIB, seconds=2.0)

    monkeypatch.setattr(gpu_footprint, "measure", fake_measure)
    return cfg, probed


def test_auto_packs_the_gpus_by_the_measured_footprint_and_tells_every_job(gpu_host, monkeypatch, caplog):
    cfg, probed = gpu_host
    # the launcher runs the jobs through app/workers.launch (joblib's launch, results as they finish)
    monkeypatch.setattr("segsweep.app.workers.launch", lambda launcher, jobs, index: (launcher.joblib["n_jobs"], jobs))
    with caplog.at_level("INFO"):
        n_jobs, jobs = ParallelLauncher().launch([[f"seed={seed}"] for seed in range(15)], 0)
    assert [config for config, _ in probed] == [cfg]  # measured once, on the first job's config
    # floor(20 GiB x 0.8 / 3.5 GiB) = 4 on the GPU with less free memory; 8 processes, 16 cores: 2 threads each
    assert n_jobs == 8
    assert jobs[3] == ["seed=3", "threads=2", "hydra.launcher.processes=8", "hydra.launcher.jobs_per_gpu=4"]
    assert "2 GPUs x 4 jobs each: 8 processes x 2 thread(s) (16 cores, 3.50 GiB of GPU memory a job (measured))" in caplog.text
    assert "a job holds 3.50 GiB on GPU 0 (3.00 GiB allocator peak + 0.50 GiB context)" in caplog.text


@pytest.mark.parametrize(
    ("launcher", "jobs", "expected_processes"),
    [
        ({"jobs_per_gpu": 3}, 15, 6),  # given: nothing to measure
        ({"processes": 5}, 15, 5),  # the processes given: shared out over the GPUs
        ({}, 2, 2),  # no more jobs than GPUs: one each, nothing to pack
    ],
)
def test_nothing_is_measured_where_the_packing_is_given_or_cannot_matter(gpu_host, launcher, jobs, expected_processes):
    _, probed = gpu_host
    split = ParallelLauncher(**launcher).plan([[f"seed={seed}"] for seed in range(jobs)])
    assert probed == [] and split.processes == expected_processes and split.footprint is None


def test_jobs_not_on_one_gpu_each_and_a_failed_probe_run_one_job_per_gpu(gpu_host, monkeypatch, make_config, caplog):
    cfg, probed = gpu_host
    with caplog.at_level("INFO"):
        cfg.trainer.accelerator = "cpu"
        assert ParallelLauncher().plan([[f"seed={seed}"] for seed in range(15)]).jobs_per_gpu == 1
        cfg.trainer.accelerator, cfg.trainer.devices = "gpu", 2
        assert ParallelLauncher().plan([[f"seed={seed}"] for seed in range(15)]).jobs_per_gpu == 1
        assert probed == [] and "the jobs do not train on one GPU each" in caplog.text
        cfg.trainer.devices = 1

        def failing(config, timeout_s):
            raise FootprintError("the probe failed: RuntimeError: CUDA error: out of memory")

        monkeypatch.setattr(gpu_footprint, "measure", failing)
        split = ParallelLauncher().plan([[f"seed={seed}"] for seed in range(15)])
    assert (split.processes, split.jobs_per_gpu) == (2, 1)
    assert "jobs_per_gpu=auto: the probe failed: RuntimeError: CUDA error: out of memory; one job per GPU" in caplog.text


def test_one_gpu_host_runs_its_one_process_in_the_launcher_with_its_slot_count(monkeypatch, gpu_host):
    monkeypatch.setattr(machine, "gpus", lambda: fake_gpus(5.0))  # 4 GiB planned: one job of 3.5 GiB
    monkeypatch.setattr(basic_launcher, "BasicLauncher", RecordingLauncher)
    jobs = ParallelLauncher().launch([["seed=1"], ["seed=2"]], 0)
    assert jobs[0] == ["seed=1", "threads=16", "hydra.launcher.processes=1", "hydra.launcher.jobs_per_gpu=1"]


def job_config(*overrides: str):
    """A job's config as the launcher has it (``hydra`` node included), as ``ParallelLauncher.job_config`` gives it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


def test_the_probe_trains_one_batch_and_validates_one_with_the_jobs_settings(tmp_path):
    # the GPU study's trainer, data and network on the CPU, at 64 px for time, through the file the probe reads
    overrides = [*SMALL_GPU_STUDY, "data.image_size=64", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    gpu_footprint.write_job_config(job_config(*overrides), tmp_path / "job.pickle")
    cfg = gpu_footprint.read_task_config(tmp_path / "job.pickle", str(tmp_path / "run"))
    assert cfg.paths.output_dir == str(tmp_path / "run") and cfg.data.image_size == 64

    class Count(pl.Callback):
        train = val = 0

        def on_train_batch_end(self, *args):
            Count.train += 1

        def on_validation_batch_end(self, *args):
            Count.val += 1

    gpu_footprint.one_step(cfg, **{**ONE_STEP, "devices": 1, "callbacks": [Count()]})
    assert (Count.train, Count.val) == (1, 1)
    GlobalHydra.instance().clear()


def test_a_probe_that_fails_says_why_in_one_line(monkeypatch, make_config):
    # the launcher's side believes in a GPU; the subprocess, on this CUDA-less machine, fails opening it
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (10 * GIB, 80 * GIB))
    config = job_config(*SMALL_GPU_STUDY)
    with pytest.raises(FootprintError, match=r"^the probe failed: \S.*") as raised:
        gpu_footprint.measure(config, timeout_s=300)
    assert "\n" not in str(raised.value)


def test_a_job_binds_to_its_slots_gpu_also_on_a_one_gpu_host_and_records_it(make_config, monkeypatch, tmp_path):
    cfg = make_config("trainer=gpu", "hydra.launcher.jobs_per_gpu=2", "hydra.launcher.processes=2")
    monkeypatch.setattr(gpu_slots, "_claimed", {})
    monkeypatch.setattr(launch, "in_multirun", lambda: True)
    monkeypatch.setattr(machine, "gpu_count", lambda: 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the lock files: this test's own
    held = gpu_slots.claim_gpu(1, 2, tmp_path)  # another worker holds slot 0
    monkeypatch.setattr(gpu_slots, "_claimed", {})
    launch.adapt_to_launcher(cfg)
    assert held == (0, 0) and list(cfg.trainer.devices) == [0] and gpu_slots.gpu_slot() == 1
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    recorded = manifest(42, "cuda:0", True, None, gpu_slots.gpu_slot())
    assert {key: recorded[key] for key in ("device", "cuda", "gpu", "gpu_slot", "jobs_per_gpu", "parallel_processes")} == {
        "device": "cuda:0",
        "cuda": "Fake GPU",
        "gpu": 0,
        "gpu_slot": 1,
        "jobs_per_gpu": 2,
        "parallel_processes": 2,
    }
    on_cpu = manifest(42, "cpu", True, None, None)
    assert (on_cpu["gpu"], on_cpu["gpu_slot"], on_cpu["jobs_per_gpu"]) == (None, None, 2)


def test_a_cpu_job_on_a_gpu_host_claims_no_slot(make_config, monkeypatch):
    cfg = make_config("trainer.accelerator=cpu")
    monkeypatch.setattr(gpu_slots, "_claimed", {})
    monkeypatch.setattr(launch, "in_multirun", lambda: True)
    monkeypatch.setattr(machine, "gpu_count", lambda: 1)
    launch.adapt_to_launcher(cfg)
    assert gpu_slots.gpu_slot() is None and cfg.trainer.devices != [0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("hydra.launcher.jobs_per_gpu=0", "hydra.launcher.jobs_per_gpu must be 'auto' or an integer >= 1, got 0"),
        ("hydra.launcher.max_jobs_per_gpu=none", "hydra.launcher.max_jobs_per_gpu must be an integer >= 1, got 'none'"),
        ("hydra.launcher.processes=0", "hydra.launcher.processes must be 'auto' or an integer >= 1, got 0"),
    ],
)
def test_a_bad_launcher_key_is_one_line_before_the_sweep(override, named):
    assert composition_error("train", ["-m", "seed=1,2", override]) == named
    assert composition_error("train", ["-m", "seed=1,2", "hydra.launcher.jobs_per_gpu=4"]) is None


def test_a_bad_jobs_per_gpu_on_the_command_line_exits_1_in_one_line(tmp_path):
    overrides = ["seed=1,2", "hydra.launcher.jobs_per_gpu=many", f"hydra.sweep.dir={tmp_path}"]
    result = run_module("segsweep.train", "-m", *overrides, check=False)
    assert result.returncode == 1 and not (tmp_path / "seed=1").exists()
    assert result.stderr.strip() == "train failed: hydra.launcher.jobs_per_gpu must be 'auto' or an integer >= 1, got 'many'"


# segsweep.train as a user runs it, in a launcher process that sees one fake GPU (10 GiB free) and whose probe
# measures 1 GiB a job without running; the jobs themselves (gpu_count 0) train on the CPU
FAKE_GPU_TRAIN = """
import sys
from segsweep import machine
from segsweep.app import gpu_footprint
from segsweep.app.parallel import GIB

machine.gpus = lambda: [machine.Gpu(index=0, name="Fake GPU", free=10 * GIB, total=80 * GIB)]


def measure(config, timeout_s):
    print(f"probed seed={config.seed} hydra={'hydra' in config} task={list(config.hydra.overrides.task)}", flush=True)
    return gpu_footprint.Footprint(peak_reserved=GIB, context=0, total_memory=80 * GIB, seconds=0.1)


gpu_footprint.measure = measure
from segsweep.train import main

main()
"""


@pytest.mark.slow
def test_a_sweep_on_a_faked_gpu_measures_its_first_job_and_hands_every_job_its_packing(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-c", FAKE_GPU_TRAIN, "-m", "debug=fast", "seed=1,2,3", f"hydra.sweep.dir={sweep}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # the first job's config, composed as its worker composes it (the sweep's config and its overrides)
    assert output.count("probed ") == 1 and "probed seed=1 hydra=True task=['debug=fast', 'seed=1']" in output
    # floor(10 GiB x 0.8 / 1 GiB) = 8 a GPU, more than 2 cores allow beyond the first: 2 processes, 1 thread each
    assert "Launching 3 job(s): 1 GPU x 2 jobs each: 2 processes x 1 thread(s) (2 cores, 1.00 GiB" in output
    for job in job_dirs(sweep):
        metrics = read_metrics(job)
        assert metrics["status"] == "completed"
        assert (metrics["manifest"]["jobs_per_gpu"], metrics["manifest"]["parallel_processes"]) == (2, 2)
        assert (metrics["manifest"]["gpu"], metrics["manifest"]["gpu_slot"]) == (None, None)  # they ran on the CPU
        assert "- hydra.launcher.jobs_per_gpu=2" in (job / ".hydra" / "hydra.yaml").read_text()  # Hydra's overrides


@pytest.mark.gpu
def test_the_probe_measures_a_footprint_below_the_gpus_memory():
    measured = gpu_footprint.measure(job_config("experiment=loss_comparison_gpu"))
    assert measured.peak_reserved > 0 and measured.context > 0
    assert 0 < measured.bytes < measured.total_memory == torch.cuda.mem_get_info(0)[1]
    print(json.dumps({**measured.__dict__, "bytes": measured.bytes}))  # for the GPU check's log: what a job holds


# long enough (400 steps each) that two jobs started together train at the same time, whichever starts first
OVERLAPPING = ["data.train_size=2048", "trainer.max_epochs=2", "trainer.limit_train_batches=200"]


@pytest.mark.gpu
def test_two_jobs_share_gpu_0_at_once_in_slots_0_and_1(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sweep = tmp_path / "sweep"
    overrides = ["trainer=gpu", "debug=fast", *OVERLAPPING, "seed=1,2", "hydra.launcher.jobs_per_gpu=2"]
    result = run_module("segsweep.train", "-m", *overrides, f"hydra.sweep.dir={sweep}")
    assert "1 GPU x 2 jobs each: 2 processes" in result.stdout + result.stderr
    manifests = [read_metrics(job)["manifest"] for job in job_dirs(sweep)]
    assert [(item["device"], item["gpu"], item["jobs_per_gpu"], item["parallel_processes"]) for item in manifests] == [
        ("cuda:0", 0, 2, 2)
    ] * 2
    assert sorted(item["gpu_slot"] for item in manifests) == [0, 1]
    (start_a, end_a), (start_b, end_b) = [
        (datetime.fromisoformat(item["start_time"]), datetime.fromisoformat(item["end_time"])) for item in manifests
    ]
    assert start_a <= end_b and start_b <= end_a  # the two trained at the same time


@pytest.mark.gpu
def test_auto_measures_the_first_job_and_packs_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sweep = tmp_path / "sweep"
    overrides = ["trainer=gpu", "debug=fast", *OVERLAPPING, "seed=1,2,3"]
    result = run_module("segsweep.train", "-m", *overrides, f"hydra.sweep.dir={sweep}")
    output = result.stdout + result.stderr
    assert "jobs_per_gpu=auto: a job holds" in output and "GiB of GPU memory a job (measured)" in output
    manifests = [read_metrics(job)["manifest"] for job in job_dirs(sweep)]
    # a debug=fast job holds well under a GiB: all three fit on an H100 or H200, one slot each
    assert [(item["jobs_per_gpu"], item["parallel_processes"]) for item in manifests] == [(3, 3)] * 3
    assert sorted(item["gpu_slot"] for item in manifests) == [0, 1, 2]
