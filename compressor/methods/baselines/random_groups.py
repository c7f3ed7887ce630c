"""`random`: coupled groups drawn uniformly at random (seeded by `train.seed`) until the target is met on
the measured network, removed at `prune.target_epoch`, then fine-tuning: the floor any criterion must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.methods.base import register_method
from compressor.methods.baselines.common import StructuredBaseline


@register_method("random")
class RandomPruning(StructuredBaseline):
    granularities = ("channel", "neuron", "kernel", "feature")

    def score(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.ctx.seed)
        return torch.rand(len(self.groups), generator=generator)
