"""The method protocol: everything a training scheme decides, as hooks the loop calls in a fixed order.

The loop (engine/trainer.py) never branches on a method's name. A method owns its optimizer and schedule, may
add a loss penalty, may prune (it then exposes `groups` and `pruned`), and may collect posterior samples.

Each method class also declares, once, what the rest of the program needs to know about it: its recipe
section (`config`, a pydantic class whose `name` literal is the method's name), its `kind` (dense, structured
or unstructured: what a `prune.target` counts) and its prune schedule's defaults (`default_start`). The
recipe schema and `compressor compare` read these declarations; new methods register with
`@register_method` and never touch the loop, the recipe or compare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from compressor.config import PruneConfig, Section, resolve_epoch
from compressor.events import Event, Pruned
from compressor.prune import GroupSet

Kind = Literal["dense", "structured", "unstructured"]
KINDS: tuple[Kind, ...] = ("dense", "structured", "unstructured")
METHODS: dict[str, type[Method]] = {}
# One-shot schemes prune here, and emmcmc's spike ramp ends here, unless `prune.target_epoch` says otherwise.
DEFAULT_PRUNE_FRACTION = 0.6


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: the method's name is its config's `name` literal; registering a name twice is an error."""
    name = cls.config.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__}.config must default its `name` to the method's name")
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__qualname__}, {cls.__qualname__})")
    cls.name = name
    METHODS[name] = cls
    return cls


@dataclass(frozen=True)
class PruneSchedule:
    """When a method prunes: its spike ramp (or gradual schedule) starts at `start_epoch`; one-shot schemes
    remove, and emmcmc's budget is met, at `target_epoch` (both 0-based epoch boundaries)."""

    start_epoch: int
    target_epoch: int


def prune_schedule(prune: PruneConfig, epochs: int, default_start: float) -> PruneSchedule:
    """`prune.start_epoch` / `prune.target_epoch` where set (epochs, or fractions of the run); else the
    method's start and 60 % of the run, at least one epoch after the start and, where the run is long enough,
    one epoch before its end, so something is left to train after the removal."""
    start = resolve_epoch(prune.start_epoch if prune.start_epoch is not None else default_start, epochs)
    if prune.target_epoch is not None:
        return PruneSchedule(start_epoch=start, target_epoch=resolve_epoch(prune.target_epoch, epochs))
    target = max(start + 1, round(DEFAULT_PRUNE_FRACTION * epochs))
    return PruneSchedule(start_epoch=start, target_epoch=min(target, max(start + 1, epochs - 1), epochs))


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
    prune: PruneConfig
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    evaluate: Callable[[], float] | None = None  # accuracy on the evaluation split now (e.g. around a removal)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


Predict = Callable[[], tuple[Tensor, Tensor]]


class Method(ABC):
    """Base: dense training with the optimizer built in `__init__`; subclasses override the hooks they need."""

    name: ClassVar[str] = "base"
    config: ClassVar[type[Section]]
    kind: ClassVar[Kind] = "dense"
    optimizer: torch.optim.Optimizer
    groups: GroupSet | None = None  # set when the method prunes
    pruned: Tensor | None = None  # bool per group

    def __init__(self, cfg: Section, ctx: TrainContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    # -- declarations -----------------------------------------------------------------------------------
    @classmethod
    def kind_of(cls, cfg: Section) -> Kind:
        """The kind for this setting (a method whose settings change what it prunes overrides this)."""
        return cls.kind

    @classmethod
    def default_start(cls, cfg: Section) -> float:
        """The epoch (or fraction of the run) its schedule starts at when `prune.start_epoch` is unset."""
        return 0

    @classmethod
    def schedule(cls, cfg: Section, prune: PruneConfig, epochs: int) -> PruneSchedule:
        return prune_schedule(prune, epochs, cls.default_start(cfg))

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

    def summary_extra(self) -> dict[str, Any]:
        """Method-specific entries of summary.json."""
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


def param_groups(
    model: nn.Module, *, decay_bn: bool, decayed: dict[str, Any], exempt: dict[str, Any]
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the weights that get decay (and the prior), with `decayed` settings, and
    BatchNorm and bias parameters with `exempt` settings unless `decay_bn` puts them with the weights."""
    decay, free = [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
            (free if (is_norm or pname == "bias") and not decay_bn else decay).append(p)
    groups = [{"params": decay, **decayed}]
    if free:
        groups.append({"params": free, **exempt})
    return groups


def pruned_event(groups: GroupSet, pruned: Tensor, newly: int, epoch: int, global_step: int, reason: str) -> Pruned:
    """The `Pruned` event of a removal: `pruned` is the whole mask after it, `newly` how many groups it added."""
    table = groups.layer_table(pruned)
    kept, total = sum(r["kept"] for r in table), sum(r["total"] for r in table)
    return Pruned(epoch=epoch + 1, global_step=global_step, newly_pruned=newly, pruned_groups=int(pruned.sum()),
                  total_groups=len(groups), channel_sparsity=1.0 - kept / max(1, total), layers=table,
                  reason=reason)


def method_class(name: str) -> type[Method]:
    """The registered class of `name` (KeyError naming the known ones)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None


def create_method(cfg: Section, ctx: TrainContext) -> Method:
    """The registered method of the recipe's `method:` section (`cfg.name`)."""
    return method_class(cfg.name)(cfg, ctx)  # type: ignore[attr-defined]
