"""Many jobs (joblib, submitit), many processes (DDP on CPU), search (Optuna), cluster config (SLURM)."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from segsweep.app.config import CONFIG_DIR
from segsweep.app.launch import adapt_trainer, trainer_plugins
from segsweep.app.validation import validate
from segsweep.data.samplers import EpochSeededSampler

from .helpers.commands import run_module
from .helpers.outputs import assert_png, job_dirs, read_metrics, top_trials_rows

FAST = ["debug=fast"]


def assert_complete(run_dir: Path) -> dict:
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed", metrics["error"]
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    assert metrics["history"] and "test/mIoU" in metrics["test"]
    return metrics


def test_joblib_launcher_runs_jobs_in_parallel_with_dataloader_workers(tmp_path):
    sweep = tmp_path / "joblib"
    run_module(
        "segsweep.train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=1,2",
        "data.num_workers=2",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    )
    jobs = job_dirs(sweep)
    # named by the swept key only: data.num_workers and the FAST settings are the same in every job
    assert [job.name for job in jobs] == ["seed=1", "seed=2"]
    seeds = [assert_complete(job)["config"]["seed"] for job in jobs]
    assert seeds == [1, 2]  # each job re-seeded although loky reuses processes
    assert read_metrics(jobs[0])["test"] != read_metrics(jobs[1])["test"]


def test_submitit_local_launcher_runs_the_cluster_code_path(tmp_path):
    sweep = tmp_path / "submitit"
    run_module("segsweep.train", "-m", "hydra/launcher=local", "seed=1,2", *FAST, f"hydra.sweep.dir={sweep}")
    assert [job.name for job in job_dirs(sweep)] == ["seed=1", "seed=2"]
    for job in job_dirs(sweep):
        assert_complete(job)
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # submitit really ran the jobs


def test_ddp_on_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_module("segsweep.train", "trainer=ddp_cpu", *FAST, f"hydra.run.dir={run_dir}")
    metrics = assert_complete(run_dir)
    assert metrics["config"]["trainer"]["devices"] == 2
    # Lightning re-launched the command for rank 1, which logged into the same run dir
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert len(list(run_dir.glob("checkpoints/*.ckpt"))) == 2  # one best, one last: written once, by rank 0


def test_ddp_inside_a_multirun_yields_exactly_its_jobs(tmp_path):
    sweep, log_dir = tmp_path / "sweep", tmp_path / "logs"
    run_module(
        "segsweep.train", "-m", "trainer=ddp_cpu", "seed=1,2", *FAST, f"hydra.sweep.dir={sweep}", f"paths.log_dir={log_dir}"
    )
    assert [job.name for job in job_dirs(sweep)] == ["seed=1", "seed=2"]
    for job in job_dirs(sweep):
        assert_complete(job)
        assert "ddp_spawn" in (job / "train.log").read_text()
    assert not log_dir.exists(), "a re-launched sweep would have made a second sweep dir"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep"]


@pytest.mark.slow
def test_ddp_reaches_the_accuracy_of_one_process_with_the_same_global_batch(tmp_path):
    common = [
        "trainer.max_epochs=4",
        "data.image_size=48",
        "data.train_size=192",
        "data.val_size=64",
        "data.test_size=32",
        "model.base_channels=8",
        "model.depth=2",
        "callbacks.rich_progress_bar=null",
    ]
    run_module("segsweep.train", *common, "trainer=cpu", "data.batch_size=16", f"hydra.run.dir={tmp_path / 'one'}")
    run_module("segsweep.train", *common, "trainer=ddp_cpu", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'two'}")
    one, two = (read_metrics(tmp_path / name)["best"]["val/mIoU"] for name in ("one", "two"))
    assert one > 0.4 and two > 0.4 and abs(one - two) < 0.15, (one, two)


def optuna_trials(sweep: Path, study: str = "segsweep") -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{sweep / 'optuna.db'}").trials


def test_optuna_search_with_sqlite_storage_resumes(tmp_path):
    sweep = tmp_path / "optuna"
    run_module("segsweep.train", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *FAST, f"hydra.sweep.dir={sweep}")
    assert len(optuna_trials(sweep)) == 3
    run_module("segsweep.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST, f"hydra.sweep.dir={sweep}")
    trials = optuna_trials(sweep)
    assert len(trials) == 5 and all(trial.state.name == "COMPLETE" for trial in trials)
    assert len({json.dumps(trial.params, sort_keys=True) for trial in trials}) == 5  # resuming drew new points
    assert len(job_dirs(sweep)) == 5
    for trial, job in zip(
        sorted(trials, key=lambda t: t.value), sorted(job_dirs(sweep), key=lambda j: read_metrics(j)["best"]["val/mIoU"])
    ):
        assert trial.value == pytest.approx(max(entry["val/mIoU_best"] for entry in read_metrics(job)["history"]))
    assert (sweep / "report.md").is_file() and "optimizer.lr" in (sweep / "report.csv").read_text()
    # the search's report: its top trials numbered as Optuna numbered them, across the resume too, and search.png
    header, *rows = top_trials_rows((sweep / "report.md").read_text())
    lrs = {row[0]: row[header.index("optimizer.lr")] for row in rows}
    assert lrs == {str(trial.number): f"{trial.params['optimizer.lr']:.4g}" for trial in trials}
    assert_png(sweep / "search.png")


def test_a_wrong_objective_metric_lists_the_metric_names(make_config):
    cfg = make_config("optimized_metric=val/miou")
    with pytest.raises(ValueError, match=r"optimized_metric: 'val/miou' is not a metric of a run; choose from .*val/mIoU_best"):
        validate(cfg)


def test_slurm_launcher_asks_for_one_task_per_device_on_every_node(tmp_path):
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=proj",
        "hydra.launcher.timeout_min=90",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    # the launcher node resolves against the whole config (trainer.devices, trainer.num_nodes)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    # The same translation the submitit launcher does before it calls sbatch.
    names = SlurmExecutor._equivalence_dict()
    params = {
        names.get(key, key): value
        for key, value in launcher.items()
        if key not in ("_target_", "submitit_folder", "max_num_timeout") and value is not None
    }
    params["mem"] = _convert_mem(params["mem"])
    sbatch = _make_sbatch_string(command="python -m segsweep.train", folder=tmp_path, **params)
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=proj", "--time=90"):
        assert f"#SBATCH {line}" in sbatch, line
    assert "--signal=USR2@" in sbatch and launcher["max_num_timeout"] == 3


def test_slurm_launcher_with_the_default_trainer_asks_for_one_node_and_one_task():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # trainer=default names no num_nodes
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, 1, 1)


def test_trainer_adapts_to_multiruns_and_gpu_hosts():
    trainer = OmegaConf.create({"strategy": "ddp", "accelerator": "gpu", "devices": 1})
    adapt_trainer(trainer, multirun=True, gpu=1)
    assert trainer.strategy == "ddp_spawn" and trainer.devices == [1]
    single = OmegaConf.create({"strategy": "ddp", "accelerator": "gpu", "devices": 1})
    adapt_trainer(single, multirun=False, gpu=None)
    assert single.strategy == "ddp" and single.devices == 1
    cpu = OmegaConf.create({"accelerator": "cpu", "devices": 1})
    adapt_trainer(cpu, multirun=True, gpu=3)
    assert cpu.devices == 1
    assert trainer_plugins("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher") == []


def test_ddp_sampler_gives_each_rank_its_share_of_the_same_order():
    single = [index for index, _ in EpochSeededSampler(10, seed=3)]
    ranks = [[index for index, _ in EpochSeededSampler(10, seed=3, num_replicas=3, rank=rank)] for rank in range(3)]
    assert [len(shard) for shard in ranks] == [4, 4, 4]
    interleaved = [shard[i] for i in range(4) for shard in ranks]
    assert interleaved[:10] == single and interleaved[10:] == single[:2]
