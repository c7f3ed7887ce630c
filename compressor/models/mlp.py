"""Multi-layer perceptron for tabular rows (or flattened small images); hidden units are what gets pruned."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from compressor.models.common import dropout_rate, kaiming_init, positive_int
from compressor.models.registry import UnknownModelError, register_model


class MLP(nn.Module):
    """Flatten, then Linear(-BN)-ReLU-dropout per hidden width, then `classifier`.

    BN sits between Linear and ReLU (Ioffe & Szegedy) so it normalises the pre-activations and
    torch-pruning couples it to its Linear's output units directly. Dropout is always present (p=0 is
    a no-op) so state_dict keys do not depend on the dropout option.
    """

    classifier_name = "classifier"

    def __init__(
        self, in_features: int, hidden: Sequence[int], dropout: float, batchnorm: bool, num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        kaiming_init(self, self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("mlp")
def mlp(
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    batchnorm: bool = False,
) -> nn.Module:
    """MLP with hidden widths `hidden`; any input_shape is flattened, so (1, 8, 8) digits work too."""
    if not isinstance(hidden, list | tuple):
        raise UnknownModelError(f"model 'mlp': option 'hidden' must be a list of widths, got {hidden!r}")
    widths = [positive_int("mlp", "hidden", size) for size in hidden]
    if not isinstance(batchnorm, bool):
        raise UnknownModelError(f"model 'mlp': option 'batchnorm' must be true or false, got {batchnorm!r}")
    return MLP(math.prod(input_shape), widths, dropout_rate("mlp", dropout), batchnorm, num_classes)
