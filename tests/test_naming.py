"""Names of runs and sweep jobs: only what was swept, floats rounded, long names cut with the job number kept."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from segsweep.app.naming import job_dirname, name_of, run_suffix, shorten
from segsweep.runs.overrides import shown_value


def hydra_root(task: list[str], sweep_dir: Path, params: dict | None = None, choices: dict | None = None):
    return OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": task},
                "sweeper": {"params": params or {}},
                "sweep": {"dir": str(sweep_dir)},
                "job": {"config": {"override_dirname": {"exclude_keys": ["experiment", "trainer"]}}},
                "runtime": {"choices": choices or {}},
            }
        }
    )


def test_floats_are_rounded_to_four_significant_digits():
    assert shown_value("0.5004003118607071") == "0.5004"
    assert shown_value("0.00204722352812965") == "0.002047"
    assert shown_value("1.2e-06") == "1.2e-06"
    assert shown_value("3") == "3"
    assert shown_value("dice") == "dice"


def test_a_sweep_job_is_named_by_its_swept_keys_only(tmp_path):
    # `make sweep ARGS=threads=1`: threads and trainer.max_epochs are not swept
    (tmp_path / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["experiment=loss_comparison", "threads=1", "trainer.max_epochs=3"]}}})
    )
    task = ["loss=dice", "seed=1", "threads=1", "trainer.max_epochs=3"]
    root = hydra_root(task, tmp_path, {"loss": "ce,dice", "seed": "1,2,3"})
    assert job_dirname("loss=dice,seed=1,threads=1,trainer.max_epochs=3", 4, _root_=root) == "loss=dice,seed=1"


def test_a_command_line_sweep_counts_as_swept(tmp_path):
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["loss=ce,dice", "threads=1"]}}}))
    root = hydra_root(["loss=ce", "threads=1"], tmp_path)
    assert job_dirname("loss=ce,threads=1", 0, _root_=root) == "loss=ce"


def test_optuna_trials_get_short_rounded_names(tmp_path):
    params = {"optimizer.lr": "tag(log, interval(0.0003, 0.03))", "loss.gamma": "interval(0.5, 4.0)"}
    task = ["loss.gamma=0.5004003118607071", "optimizer.lr=0.00204722352812965", "optimizer.weight_decay=0.0001"]
    name = job_dirname("ignored", 7, _root_=hydra_root(task, tmp_path, params))
    assert name == "loss.gamma=0.5004,optimizer.lr=0.002047"


def test_a_very_long_name_is_cut_and_keeps_the_job_number():
    long = ",".join(f"key{index}=value{index}" for index in range(20))
    short = shorten(long, 12)
    assert len(short) == 80
    assert short.endswith("...#12")


def test_nothing_swept_names_the_job_by_its_number(tmp_path):
    assert job_dirname("", 3, _root_=hydra_root([], tmp_path)) == "3"


def test_a_single_run_is_named_by_its_overrides_or_experiment(tmp_path):
    focal = hydra_root(["loss=focal", "loss.gamma=0.5004003118607071"], tmp_path)
    assert run_suffix(_root_=focal) == "_loss=focal,loss.gamma=0.5004"
    root = hydra_root(["experiment=notebook"], tmp_path, choices={"experiment": "notebook"})
    assert run_suffix(_root_=root) == "_notebook"
    assert run_suffix(_root_=hydra_root(["hydra.run.dir=/x", "ckpt_path=/a/b"], tmp_path)) == ""


def test_paths_and_hydra_keys_never_name_a_run():
    assert name_of(["hydra.run.dir=/x", "paths.log_dir=/y", "data.root=/z", "ckpt_path=/c", "hydra/launcher=joblib"]) == ""
