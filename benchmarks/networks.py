"""The networks a `base-task` backbone trains: a small conv net and CIFAR-style ResNets.

Every network maps images (batch, channels, height, width) with values in [0, 1] to
features (batch, out_features) and ends in a ReLU and global average pooling, so the
features are non-negative (Weight Aligning's weight clipping assumes so).

- `small`: three conv-BN-ReLU blocks, for 8x8 digits.
- `resnet32`: He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016,
  Sec. 4.2: a 3x3 stem and three stages of five basic blocks at 16, 32, 64 channels
  (6n + 2 layers, n = 5), shortcut option A (stride-2 subsampling and zero-padded
  channels, no parameters); 64-d features. The backbone of iCaRL, PODNet and ACIL.
- `resnet20`: the same family with n = 3 (three blocks per stage), 64-d features, and
  1x1 projection shortcuts (conv + BN) where the shape changes, as CEC's
  `models/resnet20_cifar.py` builds it: the CIFAR-100 backbone of the FSCIL protocol
  (TOPIC, CEC and their successors).
- `resnet18_cifar`: the ImageNet ResNet-18 (basic blocks [2, 2, 2, 2] at 64..512
  channels, 1x1 projection shortcuts) with the CIFAR stem: one 3x3 stride-1 conv and no
  max-pool, so 32x32 inputs keep their resolution; 512-d features. FeTrIL, FeCAM.

The ResNets start with a `Standardize` layer holding the per-channel mean and standard
deviation of the base task's training images, so a saved state dict is the whole backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallConvNet(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks and global average pooling: features of dim 2*width.

    Sized for small images (8x8 digits); the last ReLU makes the features non-negative,
    as Weight Aligning's weight clipping assumes.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(in_channels, width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = 2 * width

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)  # (batch, 2 * width)


class Standardize(nn.Module):
    """(x - mean) / std per channel, with the statistics saved in the state dict."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean[:, None, None]) / self.std[:, None, None]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the sum (He et al. 2016, Fig. 2)."""

    def __init__(self, inputs: int, outputs: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.stride = stride
        self.extra_channels = outputs - inputs
        self.projection: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or inputs != outputs):
            self.projection = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def shortcut(self, images: Tensor) -> Tensor:
        if self.projection is not None:
            return self.projection(images)
        if self.stride == 1 and self.extra_channels == 0:
            return images
        # Option A: subsample, then zero channels for the widened stage (no parameters).
        subsampled = images[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(subsampled, (0, 0, 0, 0, half, self.extra_channels - half))

    def forward(self, images: Tensor) -> Tensor:
        residual = F.relu(self.bn1(self.conv1(images)))
        residual = self.bn2(self.conv2(residual))
        return F.relu(residual + self.shortcut(images))  # (batch, outputs, h / s, w / s)


class CifarResNet(nn.Module):
    """A ResNet for 32x32 inputs: 3x3 stride-1 stem, no max-pool, stages of basic blocks."""

    def __init__(
        self, in_channels: int, widths: list[int], blocks: list[int], shortcut: str
    ) -> None:
        super().__init__()
        self.standardize = Standardize(in_channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        inputs = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(inputs, width, stride, shortcut))
                inputs = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = inputs
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(self.standardize(images))))  # (batch, dim)


def build(arch: str, in_channels: int, width: int) -> nn.Module:
    """A fresh network; `width` 0 means the architecture's standard width."""
    if arch == "small":
        return SmallConvNet(in_channels, width or 32)
    if arch == "resnet32":
        base = width or 16
        return CifarResNet(in_channels, [base, 2 * base, 4 * base], [5, 5, 5], shortcut="A")
    if arch == "resnet20":
        base = width or 16
        return CifarResNet(in_channels, [base, 2 * base, 4 * base], [3, 3, 3], shortcut="B")
    if arch == "resnet18_cifar":
        base = width or 64
        return CifarResNet(
            in_channels, [base, 2 * base, 4 * base, 8 * base], [2, 2, 2, 2], shortcut="B"
        )
    raise ValueError(f"unknown arch {arch!r}")  # options are checked before this


ARCHS = ("small", "resnet20", "resnet32", "resnet18_cifar")
