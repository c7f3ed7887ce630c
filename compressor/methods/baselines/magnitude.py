"""`magnitude`: Han et al. (2015): train dense, drop the smallest |w| across all layers at once (one global
threshold to the target sparsity), fine-tune the survivors for the rest of the budget."""

from __future__ import annotations

from typing import Any

from compressor.events import Event
from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import UnstructuredBaseline, prune_epoch


@register_method("magnitude")
class MagnitudePruning(UnstructuredBaseline):
    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.prune_step = prune_epoch(ctx) * ctx.steps_per_epoch

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        if self.masks is not None or global_step < self.prune_step:
            return []
        return self.prune_to(self.target, [w.abs() for w in self.weights])
