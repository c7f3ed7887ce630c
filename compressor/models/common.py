"""Checks and initialisation shared by the model families, so every builder fails and starts the same way."""

from __future__ import annotations

from torch import nn

from compressor.models.registry import UnknownModelError


def image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image input; convolutional models cannot take tabular (d,) rows."""
    if len(input_shape) != 3:
        raise UnknownModelError(
            f"model {model!r} needs image input (C, H, W), got input_shape {tuple(input_shape)!r}"
        )
    channels, height, width = input_shape
    return channels, height, width


def positive_int(model: str, option: str, value: object) -> int:
    """Recipe values arrive from YAML; reject floats/bools/strings before they become layer sizes."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnknownModelError(
            f"model {model!r}: option {option!r} must be a positive integer, got {value!r}"
        )
    return value


def dropout_rate(model: str, value: object) -> float:
    """A probability below 1: p=1 would zero every activation and train nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise UnknownModelError(f"model {model!r}: option 'dropout' must be in [0, 1), got {value!r}")
    return float(value)


def kaiming_init(model: nn.Module, classifier: nn.Linear) -> None:
    """He init for layers followed by ReLU; the classifier keeps PyTorch's smaller default init so the
    first logits are near-uniform instead of scaled up by the ReLU gain."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear) and module is not classifier:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    if classifier.bias is not None:
        nn.init.zeros_(classifier.bias)
