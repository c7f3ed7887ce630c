"""`snip`: Lee et al. (2019), "SNIP: Single-shot Network Pruning based on Connection Sensitivity".
At initialisation, on the first training batch, each connection's sensitivity is |w * dL/dw|; the least
sensitive ones go at once and the whole budget trains the rest. `structured: true` scores coupled channel
groups by the summed sensitivity of their connections instead (torch-pruning's GroupTaylorImportance, sum
over the group, unnormalised: sensitivities are loss changes, comparable across layers), to a MAC target."""

from __future__ import annotations

from typing import Literal

import torch_pruning as tp
from pydantic import Field
from torch import Tensor

from compressor.config import Section
from compressor.events import Event
from compressor.methods.base import Kind, Method, TrainContext, register_method
from compressor.methods.baselines.common import StructuredBaseline, UnstructuredBaseline
from compressor.methods.sgd import SGDConfig
from compressor.prune import group_scores


class SNIPConfig(SGDConfig):
    """SNIP: connection sensitivity |w * grad| on the first batch at initialisation, one shot, then training."""

    name: Literal["snip"] = "snip"  # type: ignore[assignment]
    structured: bool = Field(False, description="score and remove coupled channel groups instead of weights")


@register_method
class SNIP(Method):
    """One recipe name, two shapes of pruning: `__new__` returns the variant `structured` asks for."""

    config = SNIPConfig
    cfg: SNIPConfig

    def __new__(cls, cfg: SNIPConfig, ctx: TrainContext) -> Method:  # type: ignore[misc]
        return (StructuredSNIP if cfg.structured else UnstructuredSNIP)(cfg, ctx)

    @classmethod
    def kind_of(cls, cfg: Section) -> Kind:
        return "structured" if getattr(cfg, "structured", False) else "unstructured"


class UnstructuredSNIP(UnstructuredBaseline):
    name = "snip"

    def __init__(self, cfg: SNIPConfig, ctx: TrainContext) -> None:
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

    def __init__(self, cfg: SNIPConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.importance = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
        self.pending: list[Event] = []

    def score(self) -> Tensor:
        return group_scores(self.groups, self.importance)

    def step(self) -> None:
        if not self.done:  # the first step: gradients of the first batch at the initial weights
            self.pending = self.prune_now(0, 0)
        super().step()

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        events, self.pending = self.pending, []
        return events
