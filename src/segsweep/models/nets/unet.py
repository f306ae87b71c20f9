"""The notebook's U-Net, generalised in depth, width and upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UP_MODES = ("transpose", "bilinear")


class DoubleConv(nn.Sequential):
    """Conv -> BN -> ReLU -> Conv -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """Upsample by 2, concatenate the skip connection, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, mode: str, batch_norm: bool) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``depth`` poolings, channels doubling at each.

    Inputs whose sides are not multiples of ``2**depth`` are padded (replicate) and the
    logits cropped back, so any size works.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        base_channels: int = 32,
        depth: int = 3,
        up_mode: str = "transpose",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for key, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            if value < 1:
                raise ValueError(f"model.{key} must be >= 1, got {value}")
        if up_mode not in UP_MODES:
            raise ValueError(f"model.up_mode: unknown mode {up_mode!r} (choose from {', '.join(UP_MODES)})")
        self.num_classes = num_classes
        self.depth = depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([DoubleConv(in_channels, widths[0], batch_norm)])
        self.encoders.extend(DoubleConv(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.decoders = nn.ModuleList(Up(widths[i + 1], widths[i], up_mode, batch_norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.encoders[0](x)]
        for encoder in self.encoders[1:]:
            skips.append(encoder(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return self.head(x)[..., :height, :width]
