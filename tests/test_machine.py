"""What the machine offers: cores within OMP_NUM_THREADS, memory within cgroup v1/v2 limits, GPUs and their free memory;
the launcher, the validation and the data workers read the same numbers."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra._internal.core_plugins import basic_launcher

from hydra_plugins.segsweep_plugins.parallel_launcher import ParallelLauncher
from segsweep import machine
from segsweep.app.parallel import GIB
from segsweep.app.validation import validate
from segsweep.data.folder import FolderDataModule

from .helpers.outputs import read_metrics

MEMINFO = "MemTotal:       67108864 kB\nMemFree:         1000 kB\nMemAvailable:   20971520 kB\n"  # 20 GiB available


def fake_machine(root: Path, cgroup: str = "", files: dict[str, str] | None = None) -> Path:
    """A tree with /proc/meminfo (20 GiB available), /proc/self/cgroup and the given files under /sys/fs/cgroup."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(MEMINFO)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in (files or {}).items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_memory_is_memavailable_without_a_cgroup_limit(tmp_path):
    assert machine.available_memory(fake_machine(tmp_path)) == 20 * GIB
    v2_unlimited = fake_machine(tmp_path / "v2", "0::/\n", {"memory.max": "max\n", "memory.current": "4096\n"})
    assert machine.available_memory(v2_unlimited) == 20 * GIB
    v1_unlimited = {"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "4096\n"}
    assert machine.available_memory(fake_machine(tmp_path / "v1", "4:memory:/\n", v1_unlimited)) == 20 * GIB


def test_a_cgroup_v2_limit_caps_memory_at_the_tightest_level(tmp_path):
    files = {
        "memory.max": "max\n",
        "job.slice/memory.max": f"{8 * GIB}\n",
        "job.slice/memory.current": f"{5 * GIB}\n",  # the parent leaves 3 GiB
        "job.slice/run/memory.max": f"{6 * GIB}\n",
        "job.slice/run/memory.current": f"{2 * GIB}\n",  # the job's own cgroup would leave 4 GiB
    }
    root = fake_machine(tmp_path, "0::/job.slice/run\n", files)
    assert machine.available_memory(root) == 3 * GIB


def test_a_cgroup_v1_limit_caps_memory(tmp_path):
    files = {"memory/docker/abc/memory.limit_in_bytes": f"{4 * GIB}\n", "memory/docker/abc/memory.usage_in_bytes": f"{GIB}\n"}
    root = fake_machine(tmp_path, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n", files)
    assert machine.available_memory(root) == 3 * GIB


def test_inside_a_container_the_cgroup_root_is_its_own(tmp_path):
    # a cgroup namespace shows "/" and mounts the container's cgroup at /sys/fs/cgroup
    root = fake_machine(tmp_path, "0::/\n", {"memory.max": f"{2 * GIB}\n", "memory.current": f"{GIB // 2}\n"})
    assert machine.available_memory(root) == GIB + GIB // 2


def test_memory_is_unknown_where_nothing_says(tmp_path):
    assert machine.available_memory(tmp_path) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1 kB\n")
    assert machine.available_memory(tmp_path) is None


def test_the_cores_are_the_affinity_within_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert machine.available_cores() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert machine.available_cores() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # more threads than cores: the affinity still bounds it
    assert machine.available_cores() == 4
    for ignored in ("not a number", "0", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert machine.available_cores() == 4


@pytest.mark.parametrize("node", machine.GPU_DEVICE_NODES)
def test_the_gpus_come_with_their_free_memory(tmp_path, monkeypatch, node):
    (tmp_path / node).parent.mkdir(parents=True)
    (tmp_path / node).touch()  # a GPU driver's device node: torch is asked
    monkeypatch.setattr(machine, "ROOT", tmp_path)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Fake GPU {index}")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: ((10 + index) * GIB, 80 * GIB))
    assert machine.gpu_count() == 2
    assert machine.gpus() == [
        machine.Gpu(index=0, name="Fake GPU 0", free=10 * GIB, total=80 * GIB),
        machine.Gpu(index=1, name="Fake GPU 1", free=11 * GIB, total=80 * GIB),
    ]
    assert machine.cuda_available()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert machine.gpus() == [] and machine.gpu_count() == 0


def test_without_a_gpu_driver_torch_is_not_asked_or_imported(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "ROOT", tmp_path)  # no device node of GPU_DEVICE_NODES
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # what torch would say, were it asked
    assert machine.gpu_count() == 0 and machine.gpus() == [] and not machine.cuda_available()
    # a process that asks only this module about its GPUs (a CPU multirun's launcher) does not import torch
    code = "import sys; from segsweep import machine; machine.gpus(); machine.cuda_available(); print('torch' in sys.modules)"
    if not any(Path("/", node).exists() for node in machine.GPU_DEVICE_NODES):
        assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


class RecordingLauncher:
    """Stands in for Hydra's BasicLauncher, which ParallelLauncher runs the jobs with when it plans one process."""

    def setup(self, **context: object) -> None:
        pass

    def launch(self, jobs: list[list[str]], initial_job_idx: int) -> list[list[str]]:
        return jobs


def test_the_launcher_and_the_validation_see_the_same_memory(tmp_path, monkeypatch, make_config):
    # a container limited to 3 GiB on a host with 20 GiB available, 64 cores, no GPU
    limited = fake_machine(tmp_path / "machine", "0::/\n", {"memory.max": f"{4 * GIB}\n", "memory.current": f"{GIB}\n"})
    monkeypatch.setattr(machine, "ROOT", limited)
    monkeypatch.setattr(machine, "available_cores", lambda: 64)
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(basic_launcher, "BasicLauncher", RecordingLauncher)
    jobs = ParallelLauncher(memory_per_job_gb=2.0).launch([[f"seed={seed}"] for seed in range(15)], 0)
    assert jobs[0] == ["seed=0", "threads=64", "hydra.launcher.processes=1"]  # 2 GiB a job: one fits, not ten
    # 4 bytes a pixel: 4000 scenes of 512 px need 4.2 GB, more than the container's 3.2 GB
    cfg = make_config("data.image_size=512", "data.train_size=3000", "data.val_size=500", "data.test_size=500")
    with pytest.raises(ValueError, match=r"need 4\.2 GB in memory .* but 3\.2 GB is available"):
        validate(cfg)


def test_the_launcher_plans_one_process_per_gpu_and_says_what_is_free(monkeypatch, caplog):
    monkeypatch.setattr(machine, "available_cores", lambda: 8)
    monkeypatch.setattr(machine, "gpus", lambda: [machine.Gpu(index=0, name="Fake GPU", free=10 * GIB, total=80 * GIB)])
    monkeypatch.setattr(basic_launcher, "BasicLauncher", RecordingLauncher)
    with caplog.at_level("INFO"):
        jobs = ParallelLauncher(jobs_per_gpu=1).launch([["seed=1"], ["seed=2"]], 0)
    assert jobs[1] == ["seed=2", "threads=8", "hydra.launcher.processes=1", "hydra.launcher.jobs_per_gpu=1"]
    assert "1 GPU x 1 job each: 1 process x 8 thread(s) (8 cores)" in caplog.text
    assert "GPU 0 (Fake GPU): 10.0 of 80.0 GiB free" in caplog.text


def test_folder_workers_follow_the_machines_cores(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.yaml").write_text("names: [road, car]\n")  # all the datamodule reads before its scan
    monkeypatch.setattr(machine, "available_cores", lambda: 3)
    assert FolderDataModule(str(root), cache_dir=str(tmp_path / "cache")).num_workers == 3


@pytest.mark.parametrize(("cores", "load", "threads"), [(2, 0.3, 2), (2, 0.6, 1), (2, 14.0, 1), (16, 3.2, 13), (1, 0.0, 1)])
def test_auto_threads_leave_the_cores_other_processes_hold(cores, load, threads):
    assert machine.auto_threads(cores=cores, load=load) == threads


def test_auto_threads_take_every_core_where_the_load_is_unknown(monkeypatch):
    monkeypatch.setattr(machine, "load_average", lambda: None)  # no os.getloadavg (Windows)
    assert machine.auto_threads(cores=4) == 4


def test_auto_threads_take_the_share_omp_num_threads_states_whatever_the_load(monkeypatch):
    monkeypatch.setattr(machine, "load_average", lambda: 50.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert machine.auto_threads() == 1 == machine.available_cores()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert machine.auto_threads() == max(1, machine.available_cores() - 50)  # each busy process takes a core away


def test_a_single_run_chooses_its_threads_by_the_load_and_records_the_choice(fast_run):
    manifest = read_metrics(fast_run)["manifest"]
    choice = manifest["threads_choice"]
    assert choice["setting"] == "auto" and choice["load"] is not None and choice["threads"] == manifest["torch_threads"]
    assert 1 <= choice["threads"] <= choice["cores"]
