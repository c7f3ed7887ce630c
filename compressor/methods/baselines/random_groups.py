"""`random`: coupled groups drawn uniformly at random (seeded by `train.seed`) until the target is met on
the measured network, removed at `prune.target_epoch`, then fine-tuning: the floor any criterion must beat."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from compressor.methods.base import register_method
from compressor.methods.baselines.common import StructuredBaseline
from compressor.methods.sgd import SGDConfig


class RandomConfig(SGDConfig):
    """Random coupled channel groups removed at `prune.target_epoch`: the floor any criterion must beat."""

    name: Literal["random"] = "random"  # type: ignore[assignment]


@register_method
class RandomPruning(StructuredBaseline):
    config = RandomConfig
    cfg: RandomConfig

    granularities = ("channel", "neuron", "kernel", "feature")

    def score(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.ctx.seed)
        return torch.rand(len(self.groups), generator=generator)
