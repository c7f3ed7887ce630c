"""`l1_filter`: Li et al. (2017), "Pruning Filters for Efficient ConvNets": a filter's importance is the L1
norm of its kernel weights. On coupled groups this is torch-pruning's magnitude importance with p=1 on the
group's first (root) layer, normalised by its layer's mean so one global ranking compares layers of different
fan-in; the weakest groups go at `prune.target_epoch`, then fine-tuning."""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import Tensor

from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import GroupScorer, StructuredBaseline


@register_method("l1_filter")
class L1FilterPruning(StructuredBaseline):
    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.scorer = GroupScorer(ctx.model, self.groups, ctx.example_input)
        self.importance = tp.importance.GroupMagnitudeImportance(
            p=1, group_reduction="first", normalizer="mean"
        )

    def score(self) -> Tensor:
        return self.scorer(self.importance)
