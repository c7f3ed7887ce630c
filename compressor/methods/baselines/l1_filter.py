"""`l1_filter`: Li et al. (2017), "Pruning Filters for Efficient ConvNets": a filter's importance is the L1
norm of its kernel weights. On coupled groups this is torch-pruning's magnitude importance with p=1 on the
group's first (root) layer, normalised by its layer's mean so one global ranking compares layers of different
fan-in; the weakest groups go at `prune.target_epoch`, then fine-tuning."""

from __future__ import annotations

from typing import Literal

import torch_pruning as tp
from torch import Tensor

from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import StructuredBaseline
from compressor.methods.sgd import SGDConfig
from compressor.prune import group_scores


class L1FilterConfig(SGDConfig):
    """L1-norm filter pruning of coupled channel groups at `prune.target_epoch`, then fine-tuning (Li et al.)."""

    name: Literal["l1_filter"] = "l1_filter"  # type: ignore[assignment]


@register_method
class L1FilterPruning(StructuredBaseline):
    config = L1FilterConfig
    cfg: L1FilterConfig

    def __init__(self, cfg: L1FilterConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.importance = tp.importance.GroupMagnitudeImportance(
            p=1, group_reduction="first", normalizer="mean"
        )

    def score(self) -> Tensor:
        return group_scores(self.groups, self.importance)
