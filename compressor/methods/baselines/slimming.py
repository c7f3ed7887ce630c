"""`slimming`: Liu et al. (2017), "Learning Efficient Convolutional Networks through Network Slimming".
An L1 penalty on every BatchNorm scale while training (until `prune.target_epoch`) drives unneeded channels'
gamma towards 0; the channel groups with the smallest |gamma| (mean over the group's BatchNorms,
torch-pruning's BNScaleImportance, unnormalised: one global threshold as in the paper) are removed, then
fine-tuning without the penalty."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import GroupScorer, StructuredBaseline


@register_method("slimming")
class NetworkSlimming(StructuredBaseline):
    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.scales = [
            m.weight for m in ctx.model.modules() if isinstance(m, _BatchNorm) and m.weight is not None
        ]
        self.scorer = GroupScorer(ctx.model, self.groups, ctx.example_input)
        self.importance = tp.importance.BNScaleImportance(group_reduction="mean", normalizer=None)

    def penalty(self, model: nn.Module) -> Tensor | None:
        if self.done or not self.scales or self.cfg.sparsity == 0:
            return None
        return self.cfg.sparsity * torch.stack([w.abs().sum() for w in self.scales]).sum()

    def score(self) -> Tensor:
        return self.scorer(self.importance)
