"""VGG-16 with BatchNorm, CIFAR variant (13 conv-BN-ReLU layers, one Linear head), the usual
channel-pruning benchmark since Li et al. 2017 and Network Slimming."""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.common import image_shape, kaiming_init
from compressor.models.registry import register_model

# Conv widths, with "M" for a 2x2 max-pool (torchvision's notation).
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """Conv-BN-ReLU features with 2x2 max-pools, global average pool, `classifier`.

    A pool that would take the feature map below 1x1 is left out (8x8 digits keep three of the five),
    and the adaptive average pool makes the head the same for any input size.
    """

    classifier_name = "classifier"

    def __init__(
        self, config: tuple[int | str, ...], in_channels: int, height: int, width: int, num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if isinstance(item, str):
                if min(height, width) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    height, width = height // 2, width // 2
                continue
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init(self, self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("vgg16_bn")
def vgg16_bn(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """VGG-16-BN for CIFAR-size (and smaller) images (~14.7M parameters)."""
    channels, height, width = image_shape("vgg16_bn", input_shape)
    return VGG(_VGG16, channels, height, width, num_classes)
