"""`magnitude`: Han et al. (2015): train dense, drop the smallest |w| across all layers at once (one global
threshold to the target sparsity), fine-tune the survivors for the rest of the budget."""

from __future__ import annotations

from typing import Literal

from compressor.events import Event
from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import UnstructuredBaseline
from compressor.methods.sgd import SGDConfig


class MagnitudeConfig(SGDConfig):
    """Global unstructured magnitude pruning at `prune.target_epoch`, then fine-tuning (Han et al. 2015)."""

    name: Literal["magnitude"] = "magnitude"  # type: ignore[assignment]


@register_method
class MagnitudePruning(UnstructuredBaseline):
    config = MagnitudeConfig
    cfg: MagnitudeConfig

    def __init__(self, cfg: MagnitudeConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.prune_step = self.schedule(cfg, ctx.prune, ctx.epochs).target_epoch * ctx.steps_per_epoch

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        if self.masks is not None or global_step < self.prune_step:
            return []
        return self.prune_to(self.target, [w.abs() for w in self.weights])
