"""The pieces that keep a GPU step free of host synchronisations, checked on the CPU (tests/test_gpu.py runs them there)."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from segsweep.app.resolvers import cudnn_benchmark
from segsweep.data.classes import IGNORE_INDEX
from segsweep.data.scenes import SCENE_CLASSES
from segsweep.models.losses import CrossEntropyLoss
from segsweep.models.metrics import ConfusionMatrix
from segsweep.models.module import SegmentationModule
from segsweep.models.nets.unet import UNet


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
