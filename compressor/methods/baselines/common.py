"""What every baseline pruning scheme shares: SGD training (the `sgd` method's optimizer and schedule), the
target and the prune schedule (`Method.schedule`), and the two ways of pruning.

Structured schemes score our coupled channel groups (`GroupSet`), remove the lowest-scoring ones at one
moment with the target met on the measured shrunk network (`prune.budget`), and hold them at exactly zero
afterwards, so the engine reports the shrunk network's MACs and `compressor export` removes them. A scheme
is one scoring function. Unstructured schemes mask single weights of the conv/linear layers (the classifier
excluded) to an exact sparsity; their MACs stay dense.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from compressor.errors import RecipeError
from compressor.events import Event, Log
from compressor.methods.base import TrainContext, pruned_event
from compressor.methods.sgd import SGDConfig, SGDMethod
from compressor.prune import build_groups, select_for_target


def require_target(name: str, ctx: TrainContext) -> float:
    if ctx.prune.target is None:
        raise RecipeError(
            f"prune.target: method '{name}' prunes to a target; set one, e.g. --set prune.target=0.5"
        )
    return float(ctx.prune.target)


class StructuredBaseline(SGDMethod):
    """SGD, one removal of the lowest-`score()` coupled groups at the prune step, fine-tuning with them at 0."""

    kind = "structured"
    granularities: tuple[str, ...] = ("channel", "neuron")

    def __init__(self, cfg: SGDConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.target = require_target(cfg.name, ctx)
        if ctx.prune.granularity not in self.granularities:
            raise RecipeError(
                f"prune.granularity: method '{cfg.name}' prunes {' or '.join(self.granularities)} "
                f"groups, not {ctx.prune.granularity!r}"
            )
        self.groups = build_groups(ctx.model, ctx.example_input, ctx.prune.granularity)
        self.pruned = torch.zeros(len(self.groups), dtype=torch.bool)
        self.prune_step = self.schedule(cfg, ctx.prune, ctx.epochs).target_epoch * ctx.steps_per_epoch
        self.done = False
        self._keep: dict[nn.Parameter, Tensor] = {}

    @abstractmethod
    def score(self) -> Tensor:
        """Per-group importance (higher = keep); called once, at the prune step."""

    def step(self) -> None:
        self.optimizer.step()
        with torch.no_grad():
            for param, keep in self._keep.items():
                param.mul_(keep)

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        if self.done or global_step < self.prune_step:
            return []
        return self.prune_now(epoch, global_step)

    def prune_now(self, epoch: int, global_step: int) -> list[Event]:
        score = self.score()
        if bool(score.isnan().any()):
            raise RecipeError(
                f"method '{self.cfg.name}' cannot score every {self.groups.granularity} group of "
                f"this model (first unscored layer: {self._unscored_layer(score)})"
            )
        kind = self.ctx.prune.target_kind
        pruned = select_for_target(
            self.ctx.model, self.groups, score, self.target, kind, self.ctx.example_input,
            self.ctx.prune.round_to,
        )
        self.done = True
        evaluate = self.ctx.evaluate if global_step > 0 else None  # at initialisation there is nothing to lose
        before = evaluate() if evaluate is not None else None
        self._apply(pruned)
        event = pruned_event(self.groups, pruned, int(pruned.sum()), epoch, global_step,
                             f"{self.cfg.name}: target {self.target:.0%} of {kind}")
        event.accuracy_before = before
        event.accuracy_after = evaluate() if evaluate is not None else None
        return [event]

    def _unscored_layer(self, score: Tensor) -> str:
        return self.groups.layers[int(self.groups.layer_ids[int(score.isnan().nonzero()[0])])]

    def _apply(self, pruned: Tensor) -> None:
        self.pruned = pruned
        self.groups.zero_(pruned)
        keep = self.groups.broadcast((~pruned).float(), combine="prod", fill=1.0)
        self._keep = {param: mask for param, mask in keep.items() if bool((mask == 0).any())}

    def summary_extra(self) -> dict[str, Any]:
        return {
            "pruned_groups": int(self.pruned.sum()),
            "total_groups": len(self.groups),
            "granularity": self.groups.granularity,
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.done = bool(state["done"])
        if bool(self.pruned.any()):
            self._apply(self.pruned)


class UnstructuredBaseline(SGDMethod):
    """SGD with 0/1 masks on single weights of every conv/linear layer but the classifier, re-applied after
    each step so pruned weights never regrow; `prune_to` sets an exact global sparsity."""

    kind = "unstructured"

    def __init__(self, cfg: SGDConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.target = require_target(cfg.name, ctx)
        classifier = getattr(ctx.model, "classifier_name", None)
        self.weights = [
            module.weight
            for name, module in ctx.model.named_modules()
            if isinstance(module, _ConvNd | nn.Linear) and name != classifier
        ]
        self.masks: list[Tensor] | None = None

    def prune_to(self, sparsity: float, scores: list[Tensor]) -> list[Event]:
        """Mask the `sparsity` fraction of prunable weights with the lowest score (globally, exactly)."""
        flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
        count = round(sparsity * flat.numel())
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat, count, largest=False, sorted=False).indices] = False
        self.masks = [
            m.view_as(w)
            for m, w in zip(keep.split([w.numel() for w in self.weights]), self.weights, strict=True)
        ]
        self._mask_weights()
        return [
            Log(
                level="info",
                message=f"{self.cfg.name}: {count}/{flat.numel()} prunable weights masked ({sparsity:.1%})",
            )
        ]

    def _mask_weights(self) -> None:
        if self.masks is not None:
            with torch.no_grad():
                for weight, mask in zip(self.weights, self.masks, strict=True):
                    weight.mul_(mask)

    def step(self) -> None:
        self.optimizer.step()
        self._mask_weights()

    def weight_sparsity(self) -> float:
        zeros = sum(int((w == 0).sum()) for w in self.weights)
        return zeros / max(1, sum(w.numel() for w in self.weights))

    def summary_extra(self) -> dict[str, Any]:
        return {
            "weight_sparsity": self.weight_sparsity(),
            "prunable_weights": sum(w.numel() for w in self.weights),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.masks is not None:
            state["masks"] = [m.clone() for m in self.masks]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "masks" in state:
            self.masks = [m.to(w.device) for m, w in zip(state["masks"], self.weights, strict=True)]
