"""hydra/launcher=ray: a sweep through a real local Ray cluster, and the one line that names the extra without it."""

from __future__ import annotations

import pytest
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from hydra_plugins.segsweep_plugins.ray_launcher import RayLauncher
from segsweep.app.launch import missing_launcher_package
from segsweep.app.preflight import composition_error

from .helpers.commands import run_module
from .helpers.outputs import job_dirs, read_metrics
from .helpers.servers import processes_mentioning, ray_cluster

FAST = ["debug=fast"]
MISSING = "hydra/launcher=ray needs ray and hydra-ray-launcher: pip install 'segsweep[cluster]'"


def test_the_ray_launcher_without_its_extra_names_it_in_one_line(monkeypatch):
    target = "hydra_plugins.segsweep_plugins.ray_launcher.RayLauncher"
    assert missing_launcher_package(target) is None  # the dev extra installs it
    monkeypatch.setattr("segsweep.app.launch.find_spec", lambda name: None)
    assert missing_launcher_package(target) == MISSING
    assert composition_error("train", ["-m", "hydra/launcher=ray", "loss=ce,dice"]) == MISSING
    assert composition_error("train", ["hydra/launcher=ray"]) is None  # a single run launches nothing
    # a sweep that reaches the launcher all the same (another Hydra app, no preflight) says the same
    launcher = RayLauncher(ray=OmegaConf.create({"init": {"address": "auto"}, "remote": {}}))
    config = OmegaConf.create({"hydra": {"launcher": {"_target_": target}}})
    launcher.setup(hydra_context=object(), task_function=print, config=config)  # type: ignore[arg-type]
    with pytest.raises(CompactHydraException, match=rf"^{MISSING.replace('[', '.').replace(']', '.')}$"):
        launcher.launch([["loss=ce"]], 0)


def test_no_ray_cluster_at_the_address_is_one_line_naming_the_key(monkeypatch, tmp_path):
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginLauncher

    def no_cluster(self, job_overrides, initial_job_idx):  # what ray.init raises with address=auto and no cluster
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.\nmore")

    monkeypatch.setattr(PluginLauncher, "launch", no_cluster)
    launcher = RayLauncher(ray=OmegaConf.create({"init": {"address": "auto"}, "remote": {"num_cpus": 2}}))
    config = {"_target_": "hydra_plugins.segsweep_plugins.ray_launcher.RayLauncher"}
    launcher.setup(
        hydra_context=object(),
        task_function=print,
        config=OmegaConf.create({"hydra": {"launcher": config, "sweep": {"dir": str(tmp_path)}}}),
    )  # type: ignore[arg-type]
    with pytest.raises(CompactHydraException) as error:
        launcher.launch([["loss=ce"]], 0)
    assert str(error.value).startswith("hydra.launcher.ray.init.address=auto: Could not find any running Ray instance.")
    assert "\n" not in str(error.value) and "`ray start --head`" in str(error.value)


@pytest.mark.slow
def test_a_sweep_runs_on_a_real_ray_cluster_and_its_rerun_skips_the_completed_jobs(tmp_path):
    command = ["-m", "hydra/launcher=ray", "loss=ce,dice", *FAST, "hydra.sweep.dir=sweep"]  # relative to the launch dir
    with ray_cluster(cpus=2) as cluster:
        env, address = cluster.env, [f"hydra.launcher.ray.init.address={cluster.address}"]
        first = run_module("segsweep.train", *command, *address, cwd=tmp_path, env=env)
        sweep = tmp_path / "sweep"
        jobs = job_dirs(sweep)
        assert [job.name for job in jobs] == ["loss=ce", "loss=dice"], first.stdout[-2000:] + first.stderr[-2000:]
        for job in jobs:
            metrics = read_metrics(job)
            assert metrics["status"] == "completed", metrics["error"]
            manifest = metrics["manifest"]
            assert manifest["launcher"] == "ray" and manifest["torch_threads"] == 1  # ray.remote.num_cpus: 1
            assert manifest["command"][:2] == ["train.py", "-m"]  # the sweep's command, not Ray's worker's
            assert "threads=1" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (sweep / "report.md").is_file() and "loss=dice" in (sweep / "report.md").read_text()
        records = {job.name: (job / "metrics.json").read_bytes() for job in jobs}
        rerun = run_module("segsweep.train", *command, *address, cwd=tmp_path, env=env)
        # the completed jobs were skipped: their records stay as they were, the new command's records beside them
        assert {job.name: (job / "metrics.json").read_bytes() for job in job_dirs(sweep)} == records
        assert all(list((job / ".hydra" / "resumes").iterdir()) for job in jobs)
        assert "None: every job finished." in (sweep / "report.md").read_text(), rerun.stdout[-2000:]
    assert not processes_mentioning(str(cluster.temp_dir))  # the cluster is gone, every process of it
