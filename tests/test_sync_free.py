"""The pieces that keep a GPU step free of host synchronisations, checked on the CPU (tests/test_gpu.py runs them there)."""

import math

import pytest
import torch
from omegaconf import open_dict
from torchmetrics.classification import MulticlassConfusionMatrix

from segsweep.app.build import build_datamodule
from segsweep.app.resolvers import cudnn_benchmark
from segsweep.data.classes import IGNORE_INDEX
from segsweep.data.scenes import SCENE_CLASSES
from segsweep.models.losses import CrossEntropyLoss
from segsweep.models.metrics import ConfusionMatrix
from segsweep.models.module import SegmentationModule
from segsweep.models.nets.unet import UNet
from segsweep.train import train

from .helpers.step_traps import SyncOpTrap, one_hot_as_on_a_gpu


def test_the_scatter_add_confusion_matrix_equals_torchmetrics_over_batches():
    ours, reference = ConfusionMatrix(5, IGNORE_INDEX), MulticlassConfusionMatrix(5, ignore_index=IGNORE_INDEX)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        truth = torch.randint(0, 5, (2, 9, 7), generator=generator)
        truth[:, :2] = IGNORE_INDEX
        prediction = torch.randint(0, 5, (2, 9, 7), generator=generator)
        ours.update(prediction, truth)
        reference.update(prediction, truth)
    assert ours.compute().dtype == torch.long and torch.equal(ours.compute(), reference.compute())
    ours.reset()
    assert ours.confmat.sum() == 0


def module() -> SegmentationModule:
    net = UNet(3, 4, base_channels=4, depth=1)
    return SegmentationModule(net, CrossEntropyLoss(), lambda params: torch.optim.SGD(params, lr=0.1), SCENE_CLASSES)


def test_a_noted_non_finite_loss_is_raised_later_as_the_cpu_raises_it_at_once():
    noted = module()
    noted.note_nonfinite(torch.tensor(0.5), batch_idx=0)
    noted.raise_noted_nonfinite()  # finite: nothing noted
    noted.note_nonfinite(torch.tensor(math.inf), batch_idx=3)
    noted.note_nonfinite(torch.tensor(math.nan), batch_idx=4)  # not the first
    with pytest.raises(FloatingPointError, match=r"loss is inf at step 0 \(epoch 0, batch 3\): training stopped"):
        noted.raise_noted_nonfinite()
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0 \(epoch 0, batch 7\)"):
        module()._check_loss(torch.tensor(math.nan), batch_idx=7)  # on the CPU: at once


def test_compile_mode_is_checked_and_cudnn_benchmark_follows_determinism():
    with pytest.raises(ValueError, match="module.compile_mode must be one of default, reduce-overhead"):
        SegmentationModule(UNet(3, 4), CrossEntropyLoss(), torch.optim.SGD, SCENE_CLASSES, compile_mode="fast")
    assert [cudnn_benchmark(value) for value in (True, "warn", False, None)] == [False, False, True, True]


def trapped_run(make_config, loss: str) -> list[str]:
    """A one-epoch run of ``loss`` on the device data path (forced on the CPU) with SyncOpTrap: the ops it saw."""
    sizes = ["data.train_size=48", "data.val_size=32", "data.test_size=8", "data.batch_size=16", "trainer.max_epochs=1"]
    cfg = make_config(f"loss={loss}", *sizes, "data.on_device=true", "threads=1")
    with open_dict(cfg):
        cfg.callbacks.sync_trap = {"_target_": "tests.helpers.step_traps.SyncOpTrap"}
    SyncOpTrap.seen.clear()
    SyncOpTrap.armed = 0
    train(cfg, build_datamodule(cfg))
    assert SyncOpTrap.armed == 2 + 1  # 2 training and 1 validation steps after the epoch's first
    return sorted(set(SyncOpTrap.seen))


@pytest.mark.parametrize("loss", ["ce", "weighted_ce", "dice", "focal", "dice_ce"])  # the loss study's five
def test_steps_on_the_gpu_path_run_no_op_that_would_make_a_gpu_wait(make_config, monkeypatch, loss):
    # the checks as they run on a GPU (on the device), F.one_hot as on a GPU
    for where in ("segsweep.models.module", "segsweep.models.losses.utils"):
        monkeypatch.setattr(f"{where}.checks_on_host", lambda tensor: False)
    monkeypatch.setattr(torch.nn.functional, "one_hot", one_hot_as_on_a_gpu(torch.nn.functional.one_hot))
    assert trapped_run(make_config, loss) == []


def test_the_trap_sees_the_checks_that_read_values_on_the_host(make_config):
    seen = trapped_run(make_config, "ce")  # on the CPU the label and finiteness checks read their values at once
    assert any("module.py" in op for op in seen) and any("utils.py" in op for op in seen), seen
