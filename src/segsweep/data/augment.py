"""Training augmentation of (image, mask) pairs: scale, pad, crop, flips, colour jitter (torchvision.transforms.v2).

Every random choice of item ``index`` in ``epoch`` comes from the key ``epoch_key(seed, epoch) ^ index``
(the key SceneDataset's flips use), never from a global RNG: the same item gets the same augmentation
in any DataLoader worker, on a rerun and in a resumed run. Masks are only ever resampled with nearest
neighbour (``tv_tensors.Mask``), and padding fills them with the ignore index, so padding is never scored.

Class-aware crops (``data.rare_crop_fraction``, nnU-Net's foreground oversampling): that fraction of the crops is
centred on a pixel of a rare class the image contains; their draws come from a stream of their own, so every other
choice (and every crop at fraction 0) is the one a plain random crop makes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from segsweep.data.samplers import STREAM_CROP, STREAM_FLIP, epoch_key
from segsweep.data.scenes import uniform

# Streams of their own for the vertical flip and class-aware crops; scale, crop and jitter are drawn from a generator
# of the item's key.
_STREAM_VFLIP, _STREAM_RARE = 15, 16


@dataclass(frozen=True)
class AugmentSpec:
    """``data.augment``: what training does to each item (before taking a ``crop_size`` crop)."""

    hflip: bool = True
    vflip: bool = False
    # [low, high]: rescale by a random factor in this range before cropping (null: no rescaling)
    scale: tuple[float, float] | None = None
    # colour jitter strengths as in torchvision's ColorJitter (0: off)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> AugmentSpec:
        options = dict(options or {})
        known = [field.name for field in fields(cls)]
        for key in options:
            if key not in known:
                raise ValueError(f"data.augment.{key}: unknown key (choose from {', '.join(known)})")
        scale = options.get("scale")
        if scale is not None:
            values = [scale, scale] if isinstance(scale, (int, float)) else list(scale)
            if len(values) != 2 or not 0 < float(values[0]) <= float(values[1]):
                raise ValueError(f"data.augment.scale: expected [low, high] with 0 < low <= high, got {scale!r}")
            options["scale"] = (float(values[0]), float(values[1]))
        for key in ("brightness", "contrast", "saturation"):
            if float(options.get(key, 0.0)) < 0:
                raise ValueError(f"data.augment.{key} must be >= 0, got {options[key]}")
        if not 0 <= float(options.get("hue", 0.0)) <= 0.5:
            raise ValueError(f"data.augment.hue must be in [0, 0.5], got {options['hue']}")
        return cls(**options)


def rare_by_share(pixel_counts: Tensor) -> tuple[int, ...]:
    """The classes whose share of the training pixels is below the median share of the classes training contains."""
    present = pixel_counts > 0
    shares = pixel_counts.double() / pixel_counts.sum()
    # interpolated: with two classes the median lies between them, so the smaller one is rare
    median = shares[present].quantile(0.5) if bool(present.any()) else 0.0
    return tuple((present & (shares < median)).nonzero().flatten().tolist())


@dataclass(frozen=True)
class RareCrops:
    """Class-aware crops: ``fraction`` of the crops centred on a pixel of one of ``classes`` (None: decided by
    ``rare_by_share``) that the image contains; ``present[i]``: the rare classes image i contains."""

    fraction: float = 0.0
    classes: tuple[int, ...] | None = None
    present: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_config(cls, fraction: float, rare_classes: Sequence[str] | None, names: Sequence[str]) -> RareCrops:
        """``data.rare_crop_fraction`` and ``data.rare_classes``, checked against the dataset's class names."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"data.rare_crop_fraction must be in [0, 1], got {fraction}")
        unknown = [name for name in rare_classes or () if name not in names]
        if unknown:
            raise ValueError(f"data.rare_classes: unknown class {unknown[0]!r} (the classes are {', '.join(names)})")
        classes = None if rare_classes is None else tuple(list(names).index(name) for name in rare_classes)
        return cls(float(fraction), classes)

    def of_images(self, presence: Tensor, pixel_counts: Tensor) -> RareCrops:
        """Resolved for a training split: its per-image class presence (bool [images, classes]) and class pixel counts."""
        rare = self.classes if self.classes is not None else rare_by_share(pixel_counts)
        return replace(self, classes=rare, present=tuple(tuple(c for c in rare if row[c]) for row in presence.tolist()))


class Augment:
    """``(image uint8 [3,H,W], mask uint8 [H,W], index, epoch)`` -> a ``crop_size`` square training item."""

    def __init__(self, spec: AugmentSpec, crop_size: int, ignore_index: int, seed: int, rare: RareCrops | None = None) -> None:
        self.spec, self.crop_size, self.ignore_index, self.seed, self.rare = spec, crop_size, ignore_index, seed, rare
        self._epoch_key: tuple[int, int] | None = None

    def key(self, index: int, epoch: int) -> int:
        if self._epoch_key is None or self._epoch_key[0] != epoch:
            self._epoch_key = (epoch, epoch_key(self.seed, epoch))
        return self._epoch_key[1] ^ index

    def __call__(self, image: Tensor, mask: Tensor, index: int, epoch: int) -> tuple[Tensor, Tensor]:
        spec, crop = self.spec, self.crop_size
        key = self.key(index, epoch)
        generator = torch.Generator().manual_seed((key << 8) | STREAM_CROP)
        picture, labels = tv_tensors.Image(image), tv_tensors.Mask(mask)

        if spec.scale is not None and spec.scale != (1.0, 1.0):
            low, high = spec.scale
            factor = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
            height, width = picture.shape[-2:]
            size = [max(1, round(height * factor)), max(1, round(width * factor))]
            picture = F.resize(picture, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
            labels = F.resize(labels, size)  # a Mask: nearest neighbour

        height, width = picture.shape[-2:]
        if height < crop or width < crop:  # pad at a random position: image with 0, mask with the ignore index
            pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
            top = int(torch.randint(pad_h + 1, (), generator=generator))
            left = int(torch.randint(pad_w + 1, (), generator=generator))
            padding = [left, top, pad_w - left, pad_h - top]
            picture = F.pad(picture, padding, fill=0)
            labels = F.pad(labels, padding, fill=self.ignore_index)
            height, width = picture.shape[-2:]
        if height > crop or width > crop:
            top = int(torch.randint(height - crop + 1, (), generator=generator))
            left = int(torch.randint(width - crop + 1, (), generator=generator))
            centre = self._rare_pixel(labels, index, key)
            if centre is not None:  # centred on it, clamped to the image
                top, left = (min(max(at - crop // 2, 0), size - crop) for at, size in zip(centre, (height, width)))
            picture, labels = F.crop(picture, top, left, crop, crop), F.crop(labels, top, left, crop, crop)

        keys = torch.tensor([key])
        if spec.hflip and float(uniform(keys, STREAM_FLIP, 1)[0, 0]) < 0.5:  # SceneDataset's flip decision
            picture, labels = F.horizontal_flip(picture), F.horizontal_flip(labels)
        if spec.vflip and float(uniform(keys, _STREAM_VFLIP, 1)[0, 0]) < 0.5:
            picture, labels = F.vertical_flip(picture), F.vertical_flip(labels)

        if spec.brightness or spec.contrast or spec.saturation or spec.hue:
            picture = self._jitter(picture, generator)
        return picture.as_subclass(Tensor), labels.as_subclass(Tensor)

    def _rare_pixel(self, labels: Tensor, index: int, key: int) -> tuple[int, int] | None:
        """(row, column) of a pixel of a rare class of image ``index`` to centre a class-aware crop on, or None: a
        random crop (not drawn for this crop, or the image has no rare class)."""
        rare = self.rare
        if rare is None or not rare.present[index]:
            return None
        generator = torch.Generator().manual_seed((key << 8) | _STREAM_RARE)
        if float(torch.rand((), generator=generator, dtype=torch.float64)) >= rare.fraction:
            return None
        classes = rare.present[index]
        label = classes[int(torch.randint(len(classes), (), generator=generator))]
        width = labels.shape[-1]
        pixels = (labels == label).flatten().nonzero().flatten()
        if len(pixels) == 0:  # a blob that downscaling (data.augment.scale) removed
            return None
        row, column = divmod(int(pixels[int(torch.randint(len(pixels), (), generator=generator))]), width)
        return row, column

    def _jitter(self, picture: Tensor, generator: torch.Generator) -> Tensor:
        """Brightness, contrast, saturation, hue (in this order), each factor drawn from the item's generator."""
        spec = self.spec

        def factor(strength: float) -> float:
            return max(0.0, 1.0 + strength * (2 * float(torch.rand((), generator=generator, dtype=torch.float64)) - 1))

        if spec.brightness:
            picture = F.adjust_brightness(picture, factor(spec.brightness))
        if spec.contrast:
            picture = F.adjust_contrast(picture, factor(spec.contrast))
        if spec.saturation:
            picture = F.adjust_saturation(picture, factor(spec.saturation))
        if spec.hue:
            shift = spec.hue * (2 * float(torch.rand((), generator=generator, dtype=torch.float64)) - 1)
            picture = F.adjust_hue(picture, shift)
        return picture
