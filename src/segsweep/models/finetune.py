"""Fine-tuning a pretrained encoder: its own learning rate (a parameter group) and frozen for the first N epochs.

A net names its pretrained part by an ``encoder_module()`` method (model=smp: smp's encoder; the torchvision nets:
their backbone). Both settings derive from the config and the epoch only, so a resumed run is exact: the optimizer's
param groups (with their learning rates and state) come back from the checkpoint, and whether the encoder trains is
decided again at the start of every epoch from ``current_epoch``. A frozen encoder gets no gradients, so Adam, AdamW
and SGD leave its weights (and their state) untouched; its BatchNorm statistics still follow the data, as in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def encoder_of(net: nn.Module, key: str) -> nn.Module:
    """The pretrained encoder of ``net``; ``key`` (the setting that needs one) names the error when it has none."""
    encoder_module = getattr(net, "encoder_module", None)
    if encoder_module is None:
        raise ValueError(
            f"module.{key}: {type(net).__name__} has no pretrained encoder to fine-tune "
            "(model=smp, fcn, deeplabv3 and lraspp have one)"
        )
    return encoder_module()


def check_fine_tuning(net: nn.Module, encoder_lr_scale: float, freeze_encoder_epochs: int) -> None:
    """Values that make sense, on a net that has an encoder: one line naming the key otherwise."""
    if not encoder_lr_scale >= 0:
        raise ValueError(f"module.encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
    if freeze_encoder_epochs < 0:
        raise ValueError(f"module.freeze_encoder_epochs must be >= 0, got {freeze_encoder_epochs}")
    if encoder_lr_scale != 1:
        encoder_of(net, "encoder_lr_scale")
    if freeze_encoder_epochs:
        encoder_of(net, "freeze_encoder_epochs")


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer], net: nn.Module, parameters: Iterable[nn.Parameter], encoder_lr_scale: float
) -> torch.optim.Optimizer:
    """The optimizer over ``parameters``; with a scale other than 1 the encoder is a second group at lr x scale.

    The scale is applied before a scheduler exists, so schedulers (which read each group's initial lr) decay both.
    """
    parameters = list(parameters)
    if encoder_lr_scale == 1:
        return factory(params=parameters)  # one group: exactly the optimizer of a run without fine-tuning settings
    encoder_ids = {id(parameter) for parameter in encoder_of(net, "encoder_lr_scale").parameters()}
    rest = [parameter for parameter in parameters if id(parameter) not in encoder_ids]
    encoder = [parameter for parameter in parameters if id(parameter) in encoder_ids]
    optimizer = factory(params=[{"params": rest}, {"params": encoder}])
    optimizer.param_groups[1]["lr"] *= encoder_lr_scale
    return optimizer


def set_encoder_trainable(net: nn.Module, epoch: int, freeze_encoder_epochs: int) -> None:
    """Freeze the encoder's parameters before epoch ``freeze_encoder_epochs``, train them from it on."""
    if freeze_encoder_epochs:
        trainable = epoch >= freeze_encoder_epochs
        for parameter in encoder_of(net, "freeze_encoder_epochs").parameters():
            parameter.requires_grad_(trainable)


def fine_tuning_record(net: nn.Module, encoder_lr_scale: float, freeze_encoder_epochs: int) -> dict[str, Any]:
    """What the manifest records: the settings, the encoder's size, and the net's input normalisation if it has one."""
    encoder_module = getattr(net, "encoder_module", None)
    record: dict[str, Any] = {
        "encoder_lr_scale": encoder_lr_scale,
        "freeze_encoder_epochs": freeze_encoder_epochs,
        "encoder_parameters": sum(p.numel() for p in encoder_module().parameters()) if encoder_module else None,
    }
    mean, std = getattr(net, "mean", None), getattr(net, "std", None)
    if getattr(net, "normalize", False) and isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        record["input_normalization"] = {
            "mean": [round(float(v), 6) for v in mean.flatten()],
            "std": [round(float(v), 6) for v in std.flatten()],
            "source": getattr(net, "stats_source", "ImageNet"),
        }
    return record
