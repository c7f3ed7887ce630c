"""`slimming`: Liu et al. (2017), "Learning Efficient Convolutional Networks through Network Slimming".
An L1 penalty on every BatchNorm scale while training (until `prune.target_epoch`) drives unneeded channels'
gamma towards 0; the channel groups with the smallest |gamma| (mean over the group's BatchNorms,
torch-pruning's BNScaleImportance, unnormalised: one global threshold as in the paper) are removed, then
fine-tuning without the penalty."""

from __future__ import annotations

from typing import Literal

import torch
import torch_pruning as tp
from pydantic import Field
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import StructuredBaseline
from compressor.methods.sgd import SGDConfig
from compressor.prune import group_scores


class SlimmingConfig(SGDConfig):
    """Network slimming: L1 on BatchNorm scales until `prune.target_epoch`, prune by |gamma|, fine-tune."""

    name: Literal["slimming"] = "slimming"  # type: ignore[assignment]
    sparsity: float = Field(1e-4, ge=0, description="L1 strength on BatchNorm scales (Liu et al.: 1e-4)")


@register_method
class NetworkSlimming(StructuredBaseline):
    config = SlimmingConfig
    cfg: SlimmingConfig

    def __init__(self, cfg: SlimmingConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.scales = [
            m.weight for m in ctx.model.modules() if isinstance(m, _BatchNorm) and m.weight is not None
        ]
        self.importance = tp.importance.BNScaleImportance(group_reduction="mean", normalizer=None)

    def penalty(self, model: nn.Module) -> Tensor | None:
        if self.done or not self.scales or self.cfg.sparsity == 0:
            return None
        return self.cfg.sparsity * torch.stack([w.abs().sum() for w in self.scales]).sum()

    def score(self) -> Tensor:
        return group_scores(self.groups, self.importance)
