"""Zoo runs end to end: fine-tuning settings (recorded, exact on resume), eval and predict of a zoo checkpoint, safety."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from segsweep.app.build import build_module, load_module
from segsweep.models.finetune import set_encoder_trainable
from segsweep.runs.allowlist import UnsafeConfigError, is_allowed

from .helpers.commands import run_module
from .helpers.outputs import read_metrics
from .test_reproducibility import assert_same_weights, numbers, state
from .test_zoo import TINY

# FPN (stride 32) at 48 px: training, validation and predict's tiles all pad to 64 px
ZOO = ["debug=fast", "model=smp", "model.arch=FPN", f"model.encoder_name={TINY}", "data.image_size=48",
       "callbacks.rich_progress_bar=null"]  # fmt: skip
FINE_TUNING = ["module.encoder_lr_scale=0.1", "module.freeze_encoder_epochs=1"]


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("zoo") / "run"
    run_module("segsweep.train", *ZOO, *FINE_TUNING, f"hydra.run.dir={run_dir}")
    return run_dir


def test_the_zoo_and_fcn_targets_are_allowed():
    for target in ("segsweep.models.nets.smp_models.SMPModel", "segsweep.models.nets.torchvision_models.FCN"):
        assert is_allowed(target), target
    assert not is_allowed("segmentation_models_pytorch.create_model")  # only through our wrapper and its checks
    assert not is_allowed("segsweep.models.nets.smp_models.load_encoder")


def test_encoder_lr_scale_is_its_own_group_and_freezing_keeps_the_encoder(make_config):
    cfg = make_config(*ZOO, *FINE_TUNING, "trainer.max_epochs=2")
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    optimizers = module.configure_optimizers()
    groups = optimizers["optimizer"].param_groups
    encoder = list(module.net.encoder_module().parameters())
    assert [len(group["params"]) for group in groups] == [len(list(module.parameters())) - len(encoder), len(encoder)]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"]) and groups[1]["initial_lr"] == groups[1]["lr"]
    encoder_before = {name: p.detach().clone() for name, p in module.net.encoder_module().named_parameters()}
    head_before = module.net.model.segmentation_head[0].weight.detach().clone()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    frozen = module.net.encoder_module().named_parameters()
    assert all(torch.equal(p, encoder_before[name]) and not p.requires_grad for name, p in frozen)
    assert not torch.equal(module.net.model.segmentation_head[0].weight, head_before)
    set_encoder_trainable(module.net, epoch=1, freeze_encoder_epochs=1)  # what on_train_epoch_start does in epoch 1
    assert all(p.requires_grad for p in module.net.encoder_module().parameters())


def test_fine_tuning_settings_need_an_encoder(make_config):
    cfg = make_config("module.encoder_lr_scale=0.1")  # the default U-Net is trained from scratch
    with pytest.raises(ValueError, match=r"^module.encoder_lr_scale: UNet has no pretrained encoder"):
        build_module(cfg, instantiate(cfg.data))
    cfg = make_config("model=smp", "module.freeze_encoder_epochs=-1")
    with pytest.raises(ValueError, match=r"^module.freeze_encoder_epochs must be >= 0"):
        build_module(cfg, instantiate(cfg.data))


@pytest.mark.slow
def test_the_manifest_records_fine_tuning_and_the_normalisation(zoo_run):
    fine_tuning = read_metrics(zoo_run)["manifest"]["fine_tuning"]
    assert fine_tuning["encoder_lr_scale"] == 0.1 and fine_tuning["freeze_encoder_epochs"] == 1
    assert fine_tuning["encoder_parameters"] > 0
    assert fine_tuning["input_normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert fine_tuning["input_normalization"]["source"] == "timm pretrained_cfg of mobilenetv3_small_050.lamb_in1k"
    assert read_metrics(zoo_run)["manifest"]["packages"]["segmentation-models-pytorch"]


@pytest.mark.slow
def test_eval_of_a_zoo_checkpoint_reproduces_the_training_test_miou(zoo_run, tmp_path):
    out = tmp_path / "eval"
    run_module("segsweep.eval", f"ckpt_path={zoo_run}", f"hydra.run.dir={out}")
    report = json.loads((out / "eval.json").read_text())
    recorded = read_metrics(zoo_run)["test"]
    assert report["metrics"]["test/mIoU"] == pytest.approx(recorded["test/mIoU"], abs=1e-6)
    assert report["metrics"]["test/loss"] == pytest.approx(recorded["test/loss"], abs=1e-6)


@pytest.mark.slow
def test_predict_slides_a_zoo_network_over_larger_images(zoo_run, tmp_path):
    out = tmp_path / "predict"
    result = run_module("segsweep.predict", f"ckpt_path={zoo_run}", "input=generate", "size=[90,130]", f"output_dir={out}",
                        f"hydra.run.dir={tmp_path / 'hydra'}", "progress=false")  # fmt: skip
    assert "FPN needs sides divisible by 32: 48x48 input padded to 64x64" in result.stdout + result.stderr
    (entry,) = json.loads((out / "predictions.json").read_text())["predictions"]
    assert entry["status"] == "ok" and entry["tiles"] > 1 and 0 <= entry["mIoU"] <= 1


def test_a_checkpoint_smuggling_a_target_into_the_architecture_kwargs_is_refused(tmp_path, make_config):
    cfg = make_config(*ZOO)
    module = build_module(cfg, instantiate(cfg.data))
    marker = tmp_path / "marker"
    for kwargs, key in (
        ({"aux_params": {"_target_": "builtins.open", "file": str(marker), "mode": "w"}}, "model.kwargs.aux_params._target_"),
        ({"_target_": "os.system", "_args_": [f"touch {marker}"]}, "model.kwargs._target_"),
    ):
        config = module.hparams["config"]
        config["model"]["kwargs"] = kwargs
        path = tmp_path / "crafted.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": config}}, path)
        with pytest.raises(UnsafeConfigError, match=rf"^{path}: config key {key} names "):
            load_module(path)
        assert not marker.exists()


@pytest.mark.slow
def test_a_resume_across_the_unfreeze_epoch_is_bit_identical(tmp_path):
    """Frozen in epoch 0, unfrozen from epoch 1 at a tenth of the lr: stopped after epoch 0 and continued, or not."""
    small = [*ZOO, *FINE_TUNING, "scheduler=none", "data.train_size=24"]
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    run_module("segsweep.train", *small, "trainer.max_epochs=3", f"hydra.run.dir={uninterrupted}")
    run_module("segsweep.train", *small, "trainer.max_epochs=1", f"hydra.run.dir={resumed}")
    run_module("segsweep.train", f"ckpt_path={resumed}", "trainer.max_epochs=3")
    assert_same_weights(state(uninterrupted), state(resumed))
    history = [{k: v for k, v in entry.items() if k != "time_s"} for entry in read_metrics(resumed)["history"]]
    assert history == numbers(uninterrupted)["history"]
    (resume,) = read_metrics(resumed)["manifest"]["resumes"]
    assert resume["from_epoch"] == 2  # the first epoch the second command trained, counted from 1
