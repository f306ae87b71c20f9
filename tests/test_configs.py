"""Every config file under conf/ composes, and everything it describes instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsweep.app.build import build_module, class_weights, instantiate_all
from segsweep.app.config import CONFIG_DIR, job_dirname, validate

# Groups that describe Hydra itself; they compose with every run and are checked below.
HYDRA_GROUPS = {"hydra", "paths"}
GPU_ONLY = {"trainer": {"gpu", "ddp"}, "experiment": {"loss_comparison_gpu"}}


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
def test_config_composes_and_instantiates(make_config, group, option):
    overrides = [f"{group}={option}"]
    if option in GPU_ONLY.get(group, ()):
        overrides.append("trainer.accelerator=cpu")  # no GPU here: compose it, build it on the CPU
    cfg = make_config(*overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    datamodule, module, optimizers, trainer = build_everything(cfg)
    assert isinstance(trainer, pl.Trainer)
    images = torch.rand(2, 3, 32, 32)
    logits = module(images)
    assert logits.shape == (2, datamodule.num_classes, 32, 32)
    assert torch.isfinite(module.loss(logits, torch.randint(0, 4, (2, 32, 32))))


def test_gpu_trainer_means_bf16_and_channels_last(make_config):
    cfg = make_config("trainer=gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed" and cfg.module.channels_last
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer" and cfg.trainer.max_epochs == make_config().trainer.max_epochs


def test_hydra_and_paths_configs(make_config, tmp_path):
    cfg = make_config()
    assert cfg.paths.output_dir == str(tmp_path / "run")
    hydra = HydraConfig.get()
    assert hydra.run.dir.startswith("outputs/train/runs/")
    assert hydra.sweep.dir.startswith("outputs/train/multiruns/")
    assert job_dirname("", 3) == "3" and job_dirname("loss=dice,seed=2", 3) == "loss=dice,seed=2"
    assert "experiment" in hydra.job.config.override_dirname.exclude_keys


def test_saved_hyperparameters_are_plain_containers(make_config):
    cfg = make_config("debug=fast")
    _, module, _, _ = build_everything(cfg)
    saved = module.hparams["config"]
    assert type(saved) is dict and saved["model"]["_target_"] == "segsweep.models.nets.unet.UNet"
