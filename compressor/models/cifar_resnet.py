"""CIFAR-style ResNets: 3x3 stem at stride 1 and no max-pool, so 32x32 (and 8x8 digit) inputs keep
enough resolution. Shortcuts are option B (1x1 conv + BN projection where the shape changes): real
modules, unlike option A's zero-padding, so torch-pruning can see and prune the coupled channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compressor.models.common import image_shape, kaiming_init
from compressor.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus shortcut (He et al. 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, one stage per width (first block of later stages strides by 2), global pool, `fc`.

    Global average pooling (adaptive) makes the head independent of input size, so 8x8 digits work.
    """

    classifier_name = "fc"

    def __init__(
        self, widths: Sequence[int], blocks: Sequence[int], in_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, width, stride))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_init(self, self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def _he_resnet(name: str, depth: int, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """The 6n+2 family of He et al.: n blocks per stage at widths 16-32-64."""
    channels, _, _ = image_shape(name, input_shape)
    n = (depth - 2) // 6
    return CifarResNet((16, 32, 64), (n, n, n), channels, num_classes)


@register_model("resnet20")
def resnet20(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-20 for CIFAR (3 blocks per stage)."""
    return _he_resnet("resnet20", 20, num_classes, input_shape)


@register_model("resnet32")
def resnet32(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-32 for CIFAR (5 blocks per stage)."""
    return _he_resnet("resnet32", 32, num_classes, input_shape)


@register_model("resnet44")
def resnet44(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-44 for CIFAR (7 blocks per stage)."""
    return _he_resnet("resnet44", 44, num_classes, input_shape)


@register_model("resnet56")
def resnet56(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-56 for CIFAR (9 blocks per stage)."""
    return _he_resnet("resnet56", 56, num_classes, input_shape)


@register_model("resnet110")
def resnet110(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-110 for CIFAR (18 blocks per stage)."""
    return _he_resnet("resnet110", 110, num_classes, input_shape)


@register_model("resnet18")
def resnet18(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ImageNet ResNet-18 widths (64-512) with the CIFAR stem, as common in CIFAR pruning papers."""
    channels, _, _ = image_shape("resnet18", input_shape)
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), channels, num_classes)


@register_model("resnet34")
def resnet34(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ImageNet ResNet-34 widths (64-512) with the CIFAR stem."""
    channels, _, _ = image_shape("resnet34", input_shape)
    return CifarResNet((64, 128, 256, 512), (3, 4, 6, 3), channels, num_classes)
