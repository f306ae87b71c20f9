"""Lightning callbacks that watch the training and validation steps for host synchronisations (tests/test_gpu.py,
tests/test_sync_free.py): on a GPU by torch's sync debug mode, on the CPU by the ops that would synchronise one."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class StepTrap(pl.Callback):
    """Armed during the training and validation steps after each epoch's first: the step, its loss and metrics,
    backward, the optimizer and every callback's batch-end hook before this one's (it comes last of the config's
    callbacks). ``armed``: steps armed, over all instances (train() builds the one it uses)."""

    armed = 0

    def arm(self) -> None:
        raise NotImplementedError

    def disarm(self) -> None:
        raise NotImplementedError

    def _start(self, batch_idx: int) -> None:
        self.active = batch_idx >= 1
        if self.active:
            type(self).armed += 1
            self.arm()

    def _end(self) -> None:
        if self.active:
            self.disarm()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start(batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start(batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._end()


class SyncTrap(StepTrap):
    """Any host synchronisation in an armed step is an error (``torch.cuda.set_sync_debug_mode``)."""

    def arm(self) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def disarm(self) -> None:
        torch.cuda.set_sync_debug_mode("default")


# aten ops that make a CUDA stream wait for the host: a value read back, or an output size read off the data
SYNCING = {"_local_scalar_dense", "is_nonzero", "equal", "allclose", "nonzero", "masked_select", "_unique2", "bincount"}


# set while an op runs that reads values on the CPU only: one_hot with num_classes checks its labels there, and on a
# GPU leaves them to a device-side assertion (aten/src/ATen/native/Onehot.cpp)
ON_CPU_ONLY: list = []


def one_hot_as_on_a_gpu(one_hot):
    def checked_on_the_device(*args, **kwargs):
        ON_CPU_ONLY.append(True)
        try:
            return one_hot(*args, **kwargs)
        finally:
            ON_CPU_ONLY.pop()

    return checked_on_the_device


class SyncingOps(TorchDispatchMode):
    """Records every SYNCING op run while it is entered (with the Python stack that called it)."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frames = traceback.extract_stack()[:-1]
        # torch.optim reads its step counters, CPU tensors on a GPU too (Adam is not capturable): no wait there
        host_counter = any(f"torch{os.sep}optim{os.sep}" in frame.filename for frame in frames)
        if func.overloadpacket.__name__ in SYNCING and not host_counter and not ON_CPU_ONLY:
            self.seen.append(f"{func} at " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[::-1][:6]))
        return func(*args, **(kwargs or {}))


class SyncOpTrap(StepTrap):
    """The CPU twin of SyncTrap: records the SYNCING ops of the armed steps instead of failing on a synchronisation."""

    seen: list = []

    def arm(self) -> None:
        self.mode = SyncingOps(SyncOpTrap.seen)
        self.mode.__enter__()

    def disarm(self) -> None:
        self.mode.__exit__(None, None, None)
