"""The method interface: everything a training scheme decides, as hooks the loop calls in a fixed order.

The loop (engine/trainer.py) never branches on the method's name. A method owns its optimizer and
schedule, may add a loss penalty, may prune (it then exposes `groups` and `pruned`), and may collect
posterior samples. New methods register with `@register_method("name")`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compressor.events import Event

METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        METHODS[name] = cls
        cls.name = name
        return cls

    return deco


@dataclass
class TrainContext:
    """What a method may know about the run it is part of."""

    model: nn.Module
    n_train: int
    steps_per_epoch: int
    epochs: int
    device: torch.device
    example_input: Tensor
    classifier_name: str
    run_dir: Path
    prune: Any  # recipe.prune (PruneConfig)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


Predict = Callable[[], tuple[Tensor, Tensor]]


class Method(ABC):
    """Base: dense training with the optimizer built in `__init__`; subclasses override the hooks they need."""

    name = "base"
    optimizer: torch.optim.Optimizer
    groups: Any = None  # compressor.prune.groups.GroupSet when the method prunes
    pruned: Tensor | None = None  # bool per group

    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    # -- schedule ---------------------------------------------------------------------------------------
    @abstractmethod
    def lr_at(self, global_step: int) -> float:
        """The schedule's step size at this global step."""

    def before_step(self, global_step: int) -> None:
        lr = self.lr_at(global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    # -- training hooks ---------------------------------------------------------------------------------
    def penalty(self, model: nn.Module) -> Tensor | None:
        return None

    def step(self) -> None:
        self.optimizer.step()

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        return []

    def on_epoch_start(self, epoch: int, global_step: int) -> list[Event]:
        return []

    def on_epoch_end(self, epoch: int, global_step: int, predict: Predict) -> tuple[dict | None, list[Event]]:
        """Called after the epoch's evaluation; returns (BMA metrics or None, events)."""
        return None, []

    def diagnostics(self) -> dict[str, float]:
        return {}

    def pruned_spec(self) -> dict[str, Any] | None:
        """Which channels are physically removable, in the plain form `prune.shrink.rebuild` re-applies."""
        if self.groups is None or self.pruned is None:
            return None
        from compressor.prune.shrink import pruned_spec

        return pruned_spec(self.groups, self.pruned)

    # -- persistence ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.pruned is not None:
            state["pruned"] = self.pruned.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if "pruned" in state:
            self.pruned = state["pruned"].clone()


def split_decay(model: nn.Module, *, decay_bn: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights that get decay/prior, BatchNorm and bias parameters) — the latter may be exempted."""
    decay, exempt = [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
            (exempt if (is_norm or pname == "bias") and not decay_bn else decay).append(p)
    return decay, exempt


def create_method(cfg: Any, ctx: TrainContext) -> Method:
    import compressor.methods  # noqa: F401  (registers the built-in methods)

    return METHODS[cfg.name](cfg, ctx)
