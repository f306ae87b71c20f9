"""segmentation_models_pytorch's architectures on smp's or timm's (``tu-``) encoders as a swappable net (``model=smp``).

Built through smp's public API (``smp.create_model``) with ``encoder_weights=None``, so smp never downloads; the
pretrained encoder comes from a local file or the local caches (``encoder_weights.py``). Like the torchvision
wrappers it takes images in [0, 1], normalises them inside with the encoder's pretraining statistics and returns
plain logits ``[B, num_classes, H, W]``. Its ``mean``/``std`` are persistent buffers: a checkpoint records the
normalisation it was trained with, and eval (which rebuilds the net with ``encoder_weights=null``) gets it back.

Architectures that need sides divisible by the encoder's output stride (16 or 32) get their input padded
(replicate) and the logits cropped back, with one logged line saying so: any image and tile size works.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segsweep.models.nets.encoder_weights import load_encoder, resolve_encoder_weights

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'segsweep[zoo]'"
# keys SMPModel sets itself: in model.kwargs they would be passed twice
_OWN_KEYS = ("arch", "encoder_name", "encoder_weights", "in_channels", "classes", "num_classes")
# weights come through model.encoder_weights alone (timm would read these: a file to load, a download)
_WEIGHT_KEYS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay")
# What smp's own input check (requires_divisible_input_shape: the encoder's output stride) misses, found by running
# them: DPT fuses a map at twice its stride with the next (sides divisible by 2 x stride); PAN's pyramid attention
# pools its deepest map three more times (sides >= 8 x stride).
_STRIDE_FACTOR = {"DPT": 2}
_MIN_SIDE_FACTOR = {"PAN": 8}


def import_smp() -> Any:
    """segmentation_models_pytorch, or one line naming the extra that installs it."""
    # offline, so that no code path of smp, timm or the hub client can reach out (weights come from encoder_weights.py)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ValueError(f"model=smp needs segmentation-models-pytorch and timm (not installed): {INSTALL_HINT}") from None
    return smp


def architectures() -> list[str]:
    """The names of smp's architectures (``Unet``, ``DeepLabV3Plus``, ``Segformer`` ...), as smp registers them."""
    return [model_class.__name__ for model_class in import_smp().MODEL_ARCHITECTURES_MAPPING.values()]


def _check_kwargs(options: Mapping[str, Any], path: str = "model.kwargs") -> None:
    """No Hydra key and no key SMPModel sets itself, at any depth: one line naming it."""
    for key, value in options.items():
        if str(key).startswith("_"):
            raise ValueError(f"{path}.{key}: architecture keyword arguments cannot hold Hydra keys such as _target_")
        if path == "model.kwargs" and key in _OWN_KEYS:
            raise ValueError(f"{path}.{key}: set it as model.{'num_classes' if key == 'classes' else key} instead")
        if path == "model.kwargs" and key in _WEIGHT_KEYS:
            raise ValueError(f"{path}.{key}: pretrained weights come from model.encoder_weights only (a file or a cached name)")
        if isinstance(value, Mapping):
            _check_kwargs(value, f"{path}.{key}")


def _check_known(options: Mapping[str, Any], model_class: type, arch: str) -> None:
    """Every key of model.kwargs a parameter of the architecture (with smp's encoders, which would ignore the others)."""
    known = [name for name, p in inspect.signature(model_class).parameters.items() if p.kind is not p.VAR_KEYWORD]
    for key in options:
        if key not in known:
            choices = ", ".join(name for name in known if name not in _OWN_KEYS)
            raise ValueError(f"model.kwargs.{key}: not an argument of smp.{arch} ({choices})")


class SMPModel(nn.Module):
    """``smp.create_model(arch, encoder_name, ...)`` with local-only encoder weights, normalisation inside, any size in."""

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        num_classes: int = 4,
        in_channels: int = 3,
        normalize: bool = True,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        smp = import_smp()
        if num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1, got {num_classes}")
        names = architectures()
        chosen = next((name for name in names if name.lower() == str(arch).lower()), None)
        if chosen is None:
            raise ValueError(f"model.arch={arch}: not an smp architecture (choose from {', '.join(names)})")
        options = dict(kwargs or {})
        _check_kwargs(options)
        weights = resolve_encoder_weights(encoder_name, encoder_weights)
        if not weights.encoder_name.startswith("tu-"):  # smp's own encoders ignore unknown keywords: a typo would do nothing
            _check_known(options, smp.MODEL_ARCHITECTURES_MAPPING[chosen.lower()], chosen)
        if weights.file is not None and in_channels != 3:
            raise ValueError(f"model.in_channels={in_channels}: pretrained encoder weights here take 3-channel (RGB) images")
        if normalize and in_channels != len(weights.mean):
            raise ValueError(f"model.normalize=true: {len(weights.mean)} channel statistics for model.in_channels={in_channels}")
        if weights.through_timm:  # timm's own loader maps its checkpoint onto the features model, from this file only
            options["pretrained_cfg_overlay"] = {"file": str(weights.file)}
        try:
            self.model = smp.create_model(
                arch=chosen,
                encoder_name=weights.encoder_name,
                encoder_weights=True if weights.through_timm else None,
                in_channels=in_channels,
                classes=num_classes,
                **options,
            )
        except (TypeError, KeyError, ValueError, RuntimeError, AssertionError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"model=smp (arch={chosen}, encoder_name={encoder_name}): {first}") from error
        if weights.file is not None:
            if not weights.through_timm:
                load_encoder(self.model.encoder, weights.file, encoder_name)
            log.info("model.encoder_weights: %s loaded from %s", encoder_name, weights.file)
        self.arch, self.encoder_name, self.normalize = chosen, encoder_name, normalize
        self.stats_source = weights.stats_source
        self.register_buffer("mean", torch.tensor(weights.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(weights.std).view(1, -1, 1, 1))
        divisible = getattr(self.model, "requires_divisible_input_shape", True)
        stride = int(getattr(self.model.encoder, "output_stride", 32))
        self.multiple = stride * _STRIDE_FACTOR.get(chosen, 1) if divisible else 1
        self.min_side = stride * _MIN_SIDE_FACTOR.get(chosen, 0)
        self._told_padding = False

    def encoder_module(self) -> nn.Module:
        """The pretrained part: what ``module.encoder_lr_scale`` and ``module.freeze_encoder_epochs`` apply to."""
        return self.model.encoder

    def forward(self, images: Tensor) -> Tensor:
        if self.normalize:
            images = (images - self.mean) / self.std
        height, width = images.shape[-2:]
        pad_h, pad_w = (max(self.min_side, side + -side % self.multiple) - side for side in (height, width))
        if not (pad_h or pad_w):
            return self.model(images)
        if not self._told_padding:
            self._told_padding = True
            at_least = f" and >= {self.min_side}" if self.min_side else ""
            log.info(
                "model: %s needs sides divisible by %d%s: %dx%d input padded to %dx%d (replicate), logits cropped back",
                self.arch,
                self.multiple,
                at_least,
                height,
                width,
                height + pad_h,
                width + pad_w,
            )
        padded = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        return self.model(padded)[..., :height, :width]
