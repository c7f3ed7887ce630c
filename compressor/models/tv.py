"""torchvision ResNets for ImageNet-size inputs, built untrained (there is no network to fetch weights)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models

from compressor.models.common import image_shape
from compressor.models.registry import register_model


def _tv_resnet(
    name: str, factory: Callable[..., models.ResNet], num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """torchvision already He-initialises; only the stem changes when the data is not RGB."""
    channels, _, _ = image_shape(name, input_shape)
    model = factory(weights=None, num_classes=num_classes)
    if channels != 3:
        stem = model.conv1
        model.conv1 = nn.Conv2d(
            channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
        )
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.classifier_name = "fc"
    return model


@register_model("tv_resnet18")
def tv_resnet18(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """torchvision ResNet-18 (7x7 stride-2 stem and max-pool, ~11.7M parameters at 1000 classes)."""
    return _tv_resnet("tv_resnet18", models.resnet18, num_classes, input_shape)


@register_model("tv_resnet50")
def tv_resnet50(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """torchvision ResNet-50 (Bottleneck blocks, ~25.6M parameters at 1000 classes)."""
    return _tv_resnet("tv_resnet50", models.resnet50, num_classes, input_shape)
