"""`gmp`: gradual magnitude pruning (Zhu & Gupta 2017). The sparsity follows their cubic schedule
s_t = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3) from `prune.start_epoch` (t0) to `prune.target_epoch` (t1),
masks updated every `prune_every` steps by global magnitude, then fine-tuning at s_f."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compressor.config import Section
from compressor.events import Event
from compressor.methods.base import TrainContext, register_method
from compressor.methods.baselines.common import UnstructuredBaseline
from compressor.methods.sgd import SGDConfig


def cubic_sparsity(step: int, start: int, end: int, final: float) -> float:
    """Zhu & Gupta's schedule with initial sparsity 0: fast early pruning while weights are redundant."""
    if step >= end:
        return final
    if step <= start:
        return 0.0
    return final * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


class GMPConfig(SGDConfig):
    """Gradual magnitude pruning: Zhu & Gupta's cubic sparsity ramp from prune.start_epoch to target_epoch."""

    name: Literal["gmp"] = "gmp"  # type: ignore[assignment]
    prune_every: int | None = Field(None, gt=0, description="steps between mask updates (None: 4 per epoch)")


@register_method
class GradualMagnitudePruning(UnstructuredBaseline):
    config = GMPConfig
    cfg: GMPConfig

    @classmethod
    def default_start(cls, cfg: Section) -> float:
        return 1  # one dense epoch before the cubic ramp starts

    def __init__(self, cfg: GMPConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        schedule = self.schedule(cfg, ctx.prune, ctx.epochs)
        self.end = schedule.target_epoch * ctx.steps_per_epoch
        self.start = min(schedule.start_epoch * ctx.steps_per_epoch, self.end)
        self.every = cfg.prune_every or max(1, ctx.steps_per_epoch // 4)

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        due = global_step == self.end or (
            self.start < global_step < self.end and (global_step - self.start) % self.every == 0
        )
        if not due:
            return []
        sparsity = cubic_sparsity(global_step, self.start, self.end, self.target)
        return self.prune_to(sparsity, [w.abs() for w in self.weights])
