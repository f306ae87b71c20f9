"""Every config file under conf/ composes, and everything it describes instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsweep.app.build import build_module, class_weights, instantiate_all
from segsweep.app.config import CONFIG_DIR
from segsweep.app.validation import validate
from segsweep.export_scenes import export

from .helpers import annotation_exports, public_datasets

# Groups that describe Hydra itself; they compose with every run and are checked below.
HYDRA_GROUPS = {"hydra", "paths"}
# experiment=loss_comparison_<dataset>: the loss study on a public dataset at its usual size, on a GPU
PUBLIC_STUDIES = {f"loss_comparison_{name}": name for name in ("cityscapes", "ade20k", "voc", "camvid", "nnunet")}
GPU_ONLY = {
    "trainer": {"gpu", "ddp"},
    "experiment": {"loss_comparison_gpu", "imbalance_study_gpu", "architecture_comparison_gpu", *PUBLIC_STUDIES},
}


def config_files() -> list[tuple[str, str]]:
    files = sorted(Path(CONFIG_DIR).glob("*/*.yaml"))
    return [(path.parent.name, path.stem) for path in files if path.parent.name not in HYDRA_GROUPS | {"hparams_search"}]


def build_everything(cfg):
    validate(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule, class_weights(cfg, datamodule))
    optimizers = module.configure_optimizers()
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, optimizers, trainer


def test_every_group_file_is_covered():
    groups = {group for group, _ in config_files()}
    assert {"data", "model", "loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "debug", "experiment"} <= groups


@pytest.mark.parametrize(("group", "option"), config_files())
def test_config_composes_and_instantiates(make_config, group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if option in GPU_ONLY.get(group, ()):
        overrides.append("trainer.accelerator=cpu")  # no GPU here: compose it, build it on the CPU
    if group == "logger":  # MLflow's local store opens at construction: under tmp, not the repo's outputs/
        overrides.append(f"paths.log_dir={tmp_path / 'outputs'}")
    if (group, option) == ("data", "folder"):  # data.root is required: a small exported folder dataset
        root = export(tmp_path / "folder", {"train": 4, "val": 2, "test": 2}, 48, seed=0)
        overrides += [f"data.root={root}", "data.crop_size=32"]
    # a public dataset's preset (or its loss study), or an annotation tool's export: a tiny replica in its layout
    dataset = option if group == "data" else PUBLIC_STUDIES.get(option) if group == "experiment" else None
    replica = getattr(public_datasets, dataset, None) or getattr(annotation_exports, dataset, None) if dataset else None
    if replica is not None:
        root, _ = replica(tmp_path)
        overrides += [f"data.root={root}", "data.crop_size=32", f"data.cache_dir={tmp_path / 'cache'}"]
    cfg = make_config(*overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule, module, optimizers, trainer = build_everything(cfg)
    assert isinstance(trainer, pl.Trainer)
    images = torch.rand(2, 3, 32, 32)
    logits = module(images)
    assert logits.shape == (2, datamodule.num_classes, 32, 32)
    assert torch.isfinite(module.loss(logits, torch.randint(0, datamodule.num_classes, (2, 32, 32))))


def test_gpu_trainer_means_bf16_and_channels_last(make_config):
    cfg = make_config("trainer=gpu")
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.module.channels_last
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert cfg.trainer.max_epochs == make_config().trainer.max_epochs


def sweeper_of(make_config, *overrides: str) -> tuple:
    """The composed config and its ``hydra.sweeper`` node (interpolations unresolved) as plain containers."""
    cfg = make_config(*overrides)
    return cfg, OmegaConf.to_container(HydraConfig.get().sweeper, resolve=False)


def test_optuna_dice_ce_is_optuna_with_its_own_loss_search_space_and_study(make_config):
    _, focal = sweeper_of(make_config, "hparams_search=optuna")
    cfg, dice_ce = sweeper_of(make_config, "hparams_search=optuna_dice_ce")
    assert cfg.loss._target_ == "segsweep.models.losses.compound.CompoundLoss"
    assert set(focal["params"]) == {"optimizer.lr", "optimizer.weight_decay", "loss.gamma"}
    assert set(dice_ce["params"]) == {"optimizer.lr", "loss.terms.dice.weight", "loss.terms.ce.weight"}
    assert dice_ce["study_name"] == "segsweep_dice_ce"
    assert {**dice_ce, "study_name": None, "params": None} == {**focal, "study_name": None, "params": None}


SAMPLERS = sorted(path.stem for path in (Path(CONFIG_DIR) / "hydra" / "sweeper" / "sampler").glob("*.yaml"))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_composes_with_a_search_and_builds_seeded_per_trial(make_config, sampler):
    import optuna

    from hydra_plugins.segsweep_plugins.optuna_sweeper import OptunaSweeper
    from segsweep.app.search import build_sampler
    from segsweep.app.search_space import parse

    make_config("hparams_search=optuna_pruned", f"hydra/sweeper/sampler={sampler}")
    node = OmegaConf.to_container(HydraConfig.get().sweeper, resolve=False)  # the storage names the sweep dir, unset here
    sweeper = OptunaSweeper(**{key: value for key, value in node.items() if not key.startswith("_")})
    grid = ["loss.gamma=choice(1.0, 2.0)", "optimizer.lr=choice(0.01, 0.001)"]
    searched, _ = parse(grid if sampler == "grid" else [f"{key}={value}" for key, value in node["params"].items()])
    built, n_trials = build_sampler(sweeper, searched)
    assert type(built.sampler).__name__.lower() == f"{sampler}sampler"
    assert n_trials == (4 if sampler == "grid" else 12)
    assert isinstance(instantiate(node["pruner"]), optuna.pruners.MedianPruner)
    assert node["study_name"] == "segsweep_pruned" and node["seed"] == 1


def test_loss_comparison_gpu_is_the_loss_study_at_full_size(make_config):
    cpu, cpu_sweeper = sweeper_of(make_config, "experiment=loss_comparison")
    gpu, gpu_sweeper = sweeper_of(make_config, "experiment=loss_comparison_gpu")
    assert gpu_sweeper["params"] == cpu_sweeper["params"]
    assert HydraConfig.get().mode.name == "MULTIRUN"
    assert gpu.trainer.accelerator == "gpu"
    assert gpu.trainer.precision == "bf16-mixed"
    assert gpu.data.image_size == 128
    assert gpu.model.base_channels == 32
    assert gpu.data.scene.pedestrian_prob > cpu.data.scene.pedestrian_prob  # the default scenes' pedestrians


def test_architecture_comparison_sweeps_architectures_and_losses_and_its_gpu_twin_is_full_size(make_config):
    cpu, cpu_sweeper = sweeper_of(make_config, "experiment=architecture_comparison")
    assert set(cpu_sweeper["params"]) == {"model.arch", "loss", "seed"}  # the report's groups: architecture x loss
    assert cpu.model._target_.endswith("SMPModel") and cpu.data.image_size == 64
    gpu, gpu_sweeper = sweeper_of(make_config, "experiment=architecture_comparison_gpu")
    assert set(gpu_sweeper["params"]) == set(cpu_sweeper["params"]) and gpu.data.image_size == 128
    assert gpu.trainer.precision == "bf16-mixed" and gpu.model.encoder_name == "resnet34"


def test_the_loss_study_runs_on_a_zoo_architecture_with_one_override(make_config):
    study = make_config("experiment=loss_comparison")
    assert study.model == make_config().model  # the U-Net's own defaults: nothing U-Net-only leaks into model=smp
    cfg = make_config("experiment=loss_comparison", "model=smp", "model.arch=DeepLabV3Plus", "trainer.accelerator=cpu")
    _, module, _, _ = build_everything(cfg)
    assert module.net.arch == "DeepLabV3Plus" and cfg.data == study.data


def test_hydra_and_paths_configs(make_config, tmp_path):
    cfg = make_config()
    assert cfg.paths.output_dir == str(tmp_path / "run")
    hydra = HydraConfig.get()
    assert hydra.run.dir.startswith("outputs/train/runs/")
    assert hydra.sweep.dir.startswith("outputs/train/multiruns/")
    assert "experiment" in hydra.job.config.override_dirname.exclude_keys


@pytest.mark.parametrize("option", sorted(path.stem for path in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_composes_and_instantiates(option):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            # slurm.yaml asks for trainer.num_nodes nodes, which the DDP trainers set (README, "Running on a cluster")
            extra = ["trainer=ddp"] if option == "slurm" else []
            cfg = compose(config_name="train", overrides=[f"hydra/launcher={option}", *extra], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # against the whole config (slurm: trainer.*)
    assert isinstance(instantiate(OmegaConf.create(node)), Launcher), node
    if option == "ray":  # the running cluster this machine belongs to, one of its CPUs a job (its torch threads)
        assert node["ray"]["init"]["address"] == "auto" and node["ray"]["remote"]["num_cpus"] == 1
        assert node["_target_"] == "hydra_plugins.segsweep_plugins.ray_launcher.RayLauncher"


def test_saved_hyperparameters_are_plain_containers(make_config):
    cfg = make_config("debug=fast")
    _, module, _, _ = build_everything(cfg)
    saved = module.hparams["config"]
    assert type(saved) is dict
    assert saved["model"]["_target_"] == "segsweep.models.nets.unet.UNet"


def test_the_parallel_launcher_composes_and_instantiates_with_its_packing_keys(make_config):
    make_config("hydra.launcher.jobs_per_gpu=2", "hydra.launcher.max_jobs_per_gpu=4")
    launcher = instantiate(HydraConfig.get().launcher)
    assert type(launcher).__name__ == "ParallelLauncher"
    assert (launcher.processes, launcher.jobs_per_gpu, launcher.max_jobs_per_gpu) == ("auto", 2, 4)
    assert (launcher.gpu_memory_fraction, launcher.footprint_timeout_s) == (0.8, 300)
    make_config()
    assert instantiate(HydraConfig.get().launcher).jobs_per_gpu == "auto"  # the default: measured
