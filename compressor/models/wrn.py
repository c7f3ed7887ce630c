"""Wide ResNets (Zagoruyko & Komodakis 2016): pre-activation blocks, widths 16k-32k-64k.

Each block computes BN-ReLU once and feeds the result to both its first conv and its projection
shortcut, with ordinary modules and an explicit `+`, so torch-pruning's trace sees every coupling
(the residual stream ties each stage's block outputs, the next BN and the final BN together)."""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.common import dropout_rate, image_shape, kaiming_init, positive_int
from compressor.models.registry import UnknownModelError, register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus identity or 1x1 projection of the pre-activation."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-widen: stem conv, three stages of (depth-4)/6 blocks, final BN-ReLU, global pool, `fc`."""

    classifier_name = "fc"

    def __init__(self, depth: int, widen: int, dropout: float, in_channels: int, num_classes: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = 16
        for index, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            blocks = []
            for block in range(n):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(PreActBlock(in_planes, width, stride, dropout))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_init(self, self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def _wrn(
    name: str, depth: int, widen: int, dropout: float, num_classes: int, input_shape: tuple[int, ...]
) -> WideResNet:
    """Validate options under the name the recipe used, so errors point at what the user wrote."""
    channels, _, _ = image_shape(name, input_shape)
    depth = positive_int(name, "depth", depth)
    if depth < 10 or (depth - 4) % 6:
        raise UnknownModelError(
            f"model {name!r}: option 'depth' must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}"
        )
    widen = positive_int(name, "widen", widen)
    return WideResNet(depth, widen, dropout_rate(name, dropout), channels, num_classes)


@register_model("wrn")
def wrn(
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-depth-widen; depth must be 6n+4 so each of the three stages gets n whole blocks."""
    return _wrn("wrn", depth, widen, dropout, num_classes, input_shape)


@register_model("wrn28_10")
def wrn28_10(*, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """WRN-28-10, the paper's headline CIFAR model (~36.5M parameters)."""
    return _wrn("wrn28_10", 28, 10, dropout, num_classes, input_shape)


@register_model("wrn16_4")
def wrn16_4(*, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """WRN-16-4 (~2.7M parameters), a cheap wide baseline."""
    return _wrn("wrn16_4", 16, 4, dropout, num_classes, input_shape)


@register_model("wrn40_2")
def wrn40_2(*, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """WRN-40-2 (~2.2M parameters), deep and thin."""
    return _wrn("wrn40_2", 40, 2, dropout, num_classes, input_shape)
