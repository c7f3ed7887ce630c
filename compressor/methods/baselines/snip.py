"""`snip`: Lee et al. (2019), "SNIP: Single-shot Network Pruning based on Connection Sensitivity".
At initialisation, on the first training batch, each connection's sensitivity is |w * dL/dw|; the least
sensitive ones go at once and the whole budget trains the rest. `structured: true` scores coupled channel
groups by the summed sensitivity of their connections instead (torch-pruning's GroupTaylorImportance, sum
over the group, unnormalised: sensitivities are loss changes, comparable across layers), to a MAC target."""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import Tensor

from compressor.events import Event
from compressor.methods.base import Method, TrainContext, register_method
from compressor.methods.baselines.common import GroupScorer, StructuredBaseline, UnstructuredBaseline


@register_method("snip")
class SNIP(Method):
    """One recipe name, two shapes of pruning: `__new__` returns the variant `structured` asks for."""

    def __new__(cls, cfg: Any, ctx: TrainContext) -> Method:  # type: ignore[misc]
        return (StructuredSNIP if cfg.structured else UnstructuredSNIP)(cfg, ctx)


class UnstructuredSNIP(UnstructuredBaseline):
    name = "snip"

    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.pending: list[Event] = []

    def step(self) -> None:
        if self.masks is None:  # the first step: gradients of the first batch at the initial weights
            self.pending = self.prune_to(self.target, [(w * w.grad).abs() for w in self.weights])
        super().step()

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        events, self.pending = self.pending, []
        return events


class StructuredSNIP(StructuredBaseline):
    name = "snip"

    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.scorer = GroupScorer(ctx.model, self.groups, ctx.example_input)
        self.importance = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
        self.pending: list[Event] = []

    def score(self) -> Tensor:
        return self.scorer(self.importance)

    def step(self) -> None:
        if not self.done:  # the first step: gradients of the first batch at the initial weights
            self.pending = self.prune_now(0, 0)
        super().step()

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        events, self.pending = self.pending, []
        return events
