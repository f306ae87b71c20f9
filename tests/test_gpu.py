"""On a CUDA device (marked ``gpu``, skipped without one; ``scripts/gpu_check.py`` runs them): bf16 autocast with float32
losses, channels_last, the device data path, training steps free of host synchronisations, determinism ``warn``,
DDP spawn on the visible GPUs and an exact resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict

from segsweep.app.build import build_datamodule, build_module, class_weights
from segsweep.data.device_batches import DeviceBatches
from segsweep.train import train

from .helpers.commands import run_module
from .helpers.outputs import read_metrics
from .helpers.step_traps import SyncTrap
from .test_device_batches import assert_same_batches, fake_trainer, scenes

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
SMALL = ["data.train_size=64", "data.val_size=32", "data.test_size=32", "data.batch_size=16", "trainer.max_epochs=2"]
LOSSES = ["ce", "weighted_ce", "dice", "focal", "dice_ce", "tversky", "generalized_dice", "topk_ce"]


def on_cuda(trainer):
    trainer.strategy.root_device = CUDA
    return trainer


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_are_float32_under_bf16_autocast_and_match_float32_logits(make_config, loss):
    cfg = make_config("trainer=gpu", f"loss={loss}", *SMALL)
    datamodule = scenes(on_device=True)
    module = build_module(cfg, datamodule, class_weights(cfg, datamodule)).to(CUDA)
    images, masks = next(iter(DeviceBatches(datamodule.device_split("train", CUDA), 8)))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = module(images)
        value = module.loss(logits, masks)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.allclose(value, module.loss(logits.float(), masks), rtol=1e-5, atol=1e-6)


def test_channels_last_network_on_the_gpu_matches_the_contiguous_one(make_config):
    cfg = make_config("trainer=gpu", *SMALL)
    datamodule = scenes()
    pl.seed_everything(0)
    last = build_module(cfg, datamodule).to(CUDA).eval()
    cfg.module.channels_last = False
    plain = build_module(cfg, datamodule).to(CUDA).eval()
    plain.load_state_dict(last.state_dict())
    conv = next(m for m in last.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(4, 3, 64, 64, device=CUDA)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions differ by algorithm in the third digit
    try:
        with torch.no_grad():
            assert torch.allclose(last(images), plain(images), atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def test_device_batches_on_the_gpu_equal_the_dataloader_batches_and_never_synchronise():
    device = scenes(on_device="auto")
    device.trainer = on_cuda(fake_trainer())
    batches = device.train_dataloader()
    assert isinstance(batches, DeviceBatches) and batches.dataset.images.device.type == "cuda"
    for split in ("train", "val"):  # generated on the device: the same scenes as on the CPU
        assert torch.equal(device.device_split(split, CUDA).images.cpu(), device.splits[split].images)
    loader = scenes(on_device=False).train_dataloader()
    for epoch in (0, 3):
        loader.sampler.set_epoch(epoch)
        batches.sampler.set_epoch(epoch)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            on_gpu = list(batches)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(images.is_cuda and masks.is_cuda for images, masks in on_gpu)
        assert_same_batches([(images.cpu(), masks.cpu()) for images, masks in on_gpu], loader)


@pytest.mark.parametrize("loss", ["ce", "weighted_ce", "dice", "focal", "dice_ce"])  # the loss study's five
def test_training_and_validation_steps_never_synchronise_with_the_host(make_config, loss):
    # with the default callbacks and the progress bar, which updates every step
    cfg = make_config("trainer=gpu", f"loss={loss}", *SMALL, "trainer.max_epochs=1")
    with open_dict(cfg):
        cfg.callbacks.sync_trap = {"_target_": "tests.helpers.step_traps.SyncTrap"}
    SyncTrap.armed = 0
    try:
        metrics = train(cfg, build_datamodule(cfg))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert SyncTrap.armed == 3 + 1  # the 3 training and 1 validation steps after the epoch's first
    assert metrics["val/mIoU"] > 0


def test_the_default_gpu_trainer_is_deterministic_warn_and_warns_on_ce_instead_of_failing(make_config):
    cfg = make_config("trainer=gpu")
    assert cfg.trainer.deterministic == "warn" and cfg.trainer.benchmark is False
    logits = torch.randn(2, 4, 16, 16, device=CUDA, requires_grad=True)
    target = torch.randint(0, 4, (2, 16, 16), device=CUDA)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        instantiate(cfg.trainer, logger=False)  # Lightning sets the process's flags from trainer.deterministic
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            F.cross_entropy(logits, target).backward()  # no deterministic CUDA kernel: a warning, not an error
        assert any("deterministic" in str(warning.message) for warning in caught)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_without_determinism_cudnn_benchmarks_its_convolutions(make_config):
    cfg = make_config("trainer=gpu", "trainer.deterministic=false")
    assert cfg.trainer.benchmark is True
    before = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    try:
        instantiate(cfg.trainer, logger=False)
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.use_deterministic_algorithms(before[1])


def test_ddp_spawn_on_the_visible_gpus_completes_a_run(tmp_path):
    gpus = torch.cuda.device_count()
    run_dir = tmp_path / "ddp"
    run_module(
        "segsweep.train", "trainer=ddp", f"trainer.devices={gpus}", "trainer.strategy=ddp_spawn", *SMALL,
        "callbacks.rich_progress_bar=null", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed", metrics["error"]
    assert metrics["config"]["trainer"]["devices"] == gpus and metrics["test"]["test/mIoU"] > 0


def last_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def test_a_run_resumed_on_the_gpu_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    # deterministic kernels throughout (dice has no NLL), no schedule that depends on max_epochs
    exact = ["trainer=gpu", "loss=dice", "scheduler=none", "trainer.deterministic=true", *SMALL]
    exact += ["callbacks.rich_progress_bar=null"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_module("segsweep.train", *exact, "trainer.max_epochs=3", f"hydra.run.dir={straight}")
    run_module("segsweep.train", *exact, f"hydra.run.dir={resumed}")
    run_module("segsweep.train", f"ckpt_path={resumed}", "trainer.max_epochs=3")
    a, b = last_weights(straight), last_weights(resumed)
    assert [key for key in a if not torch.equal(a[key], b[key])] == []
    assert [entry["val/mIoU"] for entry in read_metrics(straight)["history"]] == [
        entry["val/mIoU"] for entry in read_metrics(resumed)["history"]
    ]
