"""torchvision segmentation networks (DeepLabV3-ResNet50, FCN-ResNet50, LR-ASPP-MobileNetV3) as swappable nets.

Each wrapper takes images in [0, 1] like the U-Net, applies the ImageNet mean/std normalisation
its backbone expects, and returns plain logits ``[B, num_classes, H, W]`` (torchvision's ``out``
entry; no auxiliary classifier is built).

Pretrained weights never come from the network (nothing is downloaded, ever). ``weights`` (the
whole model) and ``weights_backbone`` (the backbone alone) are each one of:

- ``null``: random initialisation;
- a local file holding a state dict (a plain ``torch.save(model.state_dict())``, a Lightning
  checkpoint, or torchvision's own ``.pth`` files), read with ``weights_only=True``;
- a torchvision weights name (``COCO_WITH_VOC_LABELS_V1``, ``DEFAULT``,
  ``ResNet50_Weights.IMAGENET1K_V2`` ...), whose file must already be in the torch hub cache
  (``torch.hub.get_dir()/checkpoints``, the place torchvision itself would download it to).

Tensors whose shape does not fit (the classifier head of COCO weights when ``num_classes`` is
4) and tensors of modules not built here (the auxiliary head) are skipped with a logged note:
that is how one fine-tunes from COCO weights.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, WeightsEnum
from torchvision.models.segmentation import (
    DeepLabV3_ResNet50_Weights,
    FCN_ResNet50_Weights,
    LRASPP_MobileNet_V3_Large_Weights,
    deeplabv3_resnet50,
    fcn_resnet50,
    lraspp_mobilenet_v3_large,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
# Key prefixes under which a state dict may hold the tensors we want (wrappers, Lightning, DDP, torchvision).
_MODEL_PREFIXES = ("", "model.", "net.model.", "module.", "module.model.", "state_dict.")
_BACKBONE_PREFIXES = ("", "backbone.", "features.", "model.backbone.", "net.model.backbone.", "module.", "module.backbone.")


def hub_checkpoint_path(weights: WeightsEnum) -> Path:
    """Where torchvision would cache ``weights``: ``torch.hub.get_dir()/checkpoints/<file name of its url>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def resolve_weights(spec: str | os.PathLike | None, enum: type[WeightsEnum], key: str) -> Path | None:
    """The local file meant by a ``weights``-style config value; never downloads.

    Raises FileNotFoundError naming the path when the file is not there, ValueError for a name
    that is neither an existing file nor one of ``enum``'s weights.
    """
    if spec is None:
        return None
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    looks_like_path = os.sep in text or "/" in text or text.lower().endswith(WEIGHT_SUFFIXES) or text.startswith("~")
    if looks_like_path:
        raise FileNotFoundError(f"model.{key}: weights file {path} does not exist")
    try:
        weights = enum.verify(text)
    except (KeyError, ValueError, TypeError):
        names = ", ".join(member.name for member in enum)
        raise ValueError(
            f"model.{key}={text!r}: neither an existing file nor a weights name of {enum.__name__} ({names}, DEFAULT)"
        ) from None
    cached = hub_checkpoint_path(weights)
    if not cached.is_file():
        raise FileNotFoundError(
            f"model.{key}={text}: {cached} not found (nothing is downloaded here: put {cached.name} from "
            f"{weights.url} there, or set model.{key} to a local state-dict file)"
        )
    return cached


def read_state_dict(path: Path, key: str) -> dict[str, Tensor]:
    """The tensors of a weights file (plain state dict, ``{"state_dict": ...}`` or ``{"model": ...}``)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip and I/O errors of torch.load
        raise ValueError(f"model.{key}: {path}: {_load_failure(error)}") from error
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    tensors = {name: value for name, value in loaded.items() if isinstance(value, Tensor)} if isinstance(loaded, Mapping) else {}
    if not tensors:
        raise ValueError(f"model.{key}: {path} holds no state dict (no tensors found)")
    return tensors


def _load_failure(error: Exception) -> str:
    """One line on why torch.load(weights_only=True) failed."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    unsafe = next((line for line in lines if "Unsupported global" in line), None)
    if unsafe:
        detail = unsafe.split("Unsupported global:", 1)[-1].split(" was not", 1)[0].strip()
        return f"refused, loading it needs arbitrary unpickling ({detail}); save a plain state dict instead"
    marker = "WeightsUnpickler error:"
    reason = None
    for i, line in enumerate(lines):
        if marker in line:
            rest = [line.split(marker, 1)[1].strip(), *lines[i + 1 :]]
            reason = next((text for text in rest if text), None)
            break
    reason = reason or next((line for line in lines if line), type(error).__name__)
    return f"not a readable state-dict file ({type(error).__name__}: {reason[:160]})"


def load_matching(target: nn.Module, source: Mapping[str, Tensor], prefixes: tuple[str, ...], path: Path, key: str) -> int:
    """Copy the tensors of ``source`` that fit ``target`` (by name and shape); log what was skipped.

    The key prefix under which ``source`` holds ``target``'s tensors is the candidate matching most
    names. Returns the number of tensors loaded; none at all is a ValueError naming the file.
    """
    own = target.state_dict()

    def strip(prefix: str) -> dict[str, Tensor]:
        return {name[len(prefix) :]: value for name, value in source.items() if name.startswith(prefix)}

    prefix = max(prefixes, key=lambda candidate: sum(name in own for name in strip(candidate)))
    renamed = strip(prefix)
    fitting = {name: value for name, value in renamed.items() if name in own and own[name].shape == value.shape}
    if not fitting:
        raise ValueError(f"model.{key}: no tensor of {path} fits {type(target).__name__} (wrong file for this network?)")
    mismatched = [
        f"{name} {tuple(value.shape)} vs {tuple(own[name].shape)}"
        for name, value in renamed.items()
        if name in own and own[name].shape != value.shape
    ]
    unused = [name for name in renamed if name not in own]
    missing = [name for name in own if name not in fitting and name not in renamed]
    target.load_state_dict(fitting, strict=False)
    log.info("model.%s: loaded %d tensors from %s", key, len(fitting), path)
    if mismatched:
        log.info(
            "model.%s: kept the new initialisation of %d tensors of another shape: %s",
            key,
            len(mismatched),
            ", ".join(mismatched),
        )
    if unused:
        log.info("model.%s: skipped %d tensors not in this network (e.g. %s)", key, len(unused), ", ".join(unused[:3]))
    if missing:
        log.info(
            "model.%s: %d tensors not in the file keep their initialisation (e.g. %s)", key, len(missing), ", ".join(missing[:3])
        )
    return len(fitting)


class TorchvisionSegmentation(nn.Module):
    """Base wrapper: ImageNet normalisation in, ``out`` logits out, weights from local files only."""

    weights_enum: type[WeightsEnum]
    backbone_weights_enum: type[WeightsEnum]

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 3,
        weights: str | None = None,
        weights_backbone: str | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1, got {num_classes}")
        if in_channels != 3:
            raise ValueError(f"model.in_channels={in_channels}: torchvision backbones take 3-channel (RGB) images")
        # Resolve both files before building anything: a missing file fails fast, with its path.
        weights_file = resolve_weights(weights, self.weights_enum, "weights")
        backbone_file = resolve_weights(weights_backbone, self.backbone_weights_enum, "weights_backbone")
        self.model = self.build(num_classes)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if backbone_file is not None:
            load_matching(
                self.model.backbone,
                read_state_dict(backbone_file, "weights_backbone"),
                _BACKBONE_PREFIXES,
                backbone_file,
                "weights_backbone",
            )
        if weights_file is not None:
            load_matching(self.model, read_state_dict(weights_file, "weights"), _MODEL_PREFIXES, weights_file, "weights")

    def build(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def encoder_module(self) -> nn.Module:
        """The backbone: what ``module.encoder_lr_scale`` and ``module.freeze_encoder_epochs`` apply to."""
        return self.model.backbone

    def forward(self, images: Tensor) -> Tensor:
        if self.normalize:
            images = (images - self.mean) / self.std
        return self.model(images)["out"]


class DeepLabV3(TorchvisionSegmentation):
    """torchvision's ``deeplabv3_resnet50`` (40M parameters, output stride 8)."""

    weights_enum = DeepLabV3_ResNet50_Weights
    backbone_weights_enum = ResNet50_Weights

    def build(self, num_classes: int) -> nn.Module:
        # weights_backbone=None: torchvision's default would download ImageNet weights.
        return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)

    def forward(self, images: Tensor) -> Tensor:
        if self.training and images.shape[0] == 1:
            # Otherwise a cryptic "Expected more than 1 value per channel" from BatchNorm deep inside ASPP.
            raise ValueError(
                "DeepLabV3 cannot train on a batch of 1 image (BatchNorm of its ASPP image pooling needs >= 2): "
                "raise data.batch_size, or choose data.train_size so that no batch of 1 is left over"
            )
        return super().forward(images)


class FCN(TorchvisionSegmentation):
    """torchvision's ``fcn_resnet50`` (33M parameters, output stride 8): the seed notebook's cheat-sheet FCN."""

    weights_enum = FCN_ResNet50_Weights
    backbone_weights_enum = ResNet50_Weights

    def build(self, num_classes: int) -> nn.Module:
        return fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


class LRASPP(TorchvisionSegmentation):
    """torchvision's ``lraspp_mobilenet_v3_large`` (3.2M parameters): the light option."""

    weights_enum = LRASPP_MobileNet_V3_Large_Weights
    backbone_weights_enum = MobileNet_V3_Large_Weights

    def build(self, num_classes: int) -> nn.Module:
        return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
