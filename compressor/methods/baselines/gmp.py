"""`gmp`: gradual magnitude pruning (Zhu & Gupta 2017). The sparsity follows their cubic schedule
s_t = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3) from `prune.start_epoch` (t0) to `prune.target_epoch` (t1),
masks updated every `prune_every` steps by global magnitude, then fine-tuning at s_f."""

from __future__ import annotations

from typing import Any

from compressor.events import Event
from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import UnstructuredBaseline, prune_epoch


def cubic_sparsity(step: int, start: int, end: int, final: float) -> float:
    """Zhu & Gupta's schedule with initial sparsity 0: fast early pruning while weights are redundant."""
    if step >= end:
        return final
    if step <= start:
        return 0.0
    return final * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


@register_method("gmp")
class GradualMagnitudePruning(UnstructuredBaseline):
    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.end = prune_epoch(ctx) * ctx.steps_per_epoch
        first = ctx.prune.start_epoch if ctx.prune.start_epoch is not None else min(1, prune_epoch(ctx))
        self.start = min(first * ctx.steps_per_epoch, self.end)
        self.every = cfg.prune_every or max(1, ctx.steps_per_epoch // 4)

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        due = global_step == self.end or (
            self.start < global_step < self.end and (global_step - self.start) % self.every == 0
        )
        if not due:
            return []
        sparsity = cubic_sparsity(global_step, self.start, self.end, self.target)
        return self.prune_to(sparsity, [w.abs() for w in self.weights])
