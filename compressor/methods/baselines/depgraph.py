"""`depgraph`: Fang et al. (2023), "DepGraph: Towards Any Structural Pruning", as torch-pruning 1.6's
GroupNormPruner does it, on our coupled groups (which come from the same DependencyGraph).

Sparse training until `prune.target_epoch`: after each backward, every slice of every group gets the extra
gradient reg * gamma * w with gamma = alpha^((max - imp) / (max - min)) inside each tp group, imp the square
root of the group's L2 importance (GroupMagnitudeImportance p=2, mean over the group's layers, normalised by
the group mean); weights only, as GroupNormPruner.regularize(bias=False). Then the groups with the smallest
importance go (one global ranking, tp's --global-pruning) to the target on the measured network, and the
rest fine-tunes. Pruning goes through our GroupSet, so the engine measures and export removes them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch_pruning as tp
from pydantic import Field
from torch import Tensor

from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import StructuredBaseline
from compressor.methods.sgd import SGDConfig
from compressor.prune import group_scores


class DepGraphConfig(SGDConfig):
    """DepGraph (Fang et al. 2023): group-norm sparse training until `prune.target_epoch`, then removal of
    the coupled groups with the smallest group norm, then fine-tuning."""

    name: Literal["depgraph"] = "depgraph"  # type: ignore[assignment]
    reg: float = Field(5e-4, ge=0, description="group regularisation strength (torch-pruning's --reg)")
    alpha: float = Field(16.0, ge=1, description="weakest groups get up to alpha x the regularisation")


@register_method
class DepGraphPruning(StructuredBaseline):
    config = DepGraphConfig
    cfg: DepGraphConfig

    def __init__(self, cfg: DepGraphConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.importance = tp.importance.GroupMagnitudeImportance(
            p=2, group_reduction="mean", normalizer="mean"
        )
        self.biases = {p for name, p in ctx.model.named_parameters() if name.endswith("bias")}

    def score(self) -> Tensor:
        return group_scores(self.groups, self.importance)

    def _gamma(self, imp: Tensor) -> Tensor:
        imp = imp.sqrt()
        spread = imp.max() - imp.min()
        if not bool(spread > 0):
            return torch.ones_like(imp)
        return self.cfg.alpha ** ((imp.max() - imp) / spread)

    def step(self) -> None:
        if not self.done and self.cfg.reg > 0:
            gamma = group_scores(self.groups, self.importance, within=self._gamma).nan_to_num(0.0)
            with torch.no_grad():
                for param, scale in self.groups.broadcast(gamma, combine="sum", fill=0.0).items():
                    if param.grad is not None and param not in self.biases:
                        param.grad.add_(param * scale, alpha=self.cfg.reg)
        super().step()
