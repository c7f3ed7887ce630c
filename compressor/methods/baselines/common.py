"""What every baseline pruning scheme shares: SGD training (the `sgd` method's optimizer and schedule), the
target and the epoch split, and the two ways of pruning.

Structured schemes score our coupled channel groups (`GroupSet`), remove the lowest-scoring ones at one
moment with the target met on the measured shrunk network (`prune.budget`), and hold them at exactly zero
afterwards, so the engine reports the shrunk network's MACs and `compressor export` removes them. A scheme
is one scoring function. Unstructured schemes mask single weights of the conv/linear layers (the classifier
excluded) to an exact sparsity; their MACs stay dense.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from compressor.events import Event, Log, Pruned
from compressor.methods.base import TrainContext
from compressor.errors import RecipeError
from compressor.methods.sgd import SGDMethod
from compressor.prune.budget import select_for_target
from compressor.prune.groups import GroupSet, build_groups, eval_mode


def require_target(name: str, ctx: TrainContext) -> float:
    if ctx.prune.target is None:
        raise RecipeError(
            f"prune.target: method '{name}' prunes to a target; set one, e.g. --set prune.target=0.5"
        )
    return float(ctx.prune.target)


def prune_epoch(ctx: TrainContext) -> int:
    """The shared split: dense training before this epoch, fine-tuning from it (`prune.target_epoch`;
    default 60 % of the run, emmcmc's default too)."""
    if ctx.prune.target_epoch is not None:
        return int(ctx.prune.target_epoch)
    return max(1, round(0.6 * ctx.epochs))


class GroupScorer:
    """Torch-Pruning importance estimators evaluated on our coupled groups.

    Both sides come from the same `DependencyGraph.get_all_groups`, and our group ids are the layer's base
    plus the tp group's root indices, so a tp group's score vector maps onto ours through the one layer that
    names it (its earliest output layer in model order, the only out-layer in `groups.layers`).
    """

    def __init__(self, model: nn.Module, groups: GroupSet, example_input: Tensor) -> None:
        names = {module: name for name, module in model.named_modules()}
        classifier = model.get_submodule(model.classifier_name)
        roots = [_ConvNd, nn.Linear] if groups.granularity == "channel" else [nn.Linear]
        with eval_mode(model), torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=(example_input,), verbose=False
            )
        starts = {name: int((groups.layer_ids == i).nonzero()[0]) for i, name in enumerate(groups.layers)}
        self.count = len(groups)
        self.pairs: list[tuple[Any, int]] = []
        for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=roots):
            outs = [
                names.get(item.dep.target.module)
                for item in group.items
                if item.dep.handler.__name__ == "prune_out_channels"
            ]
            layer = next((name for name in outs if name in starts), None)
            if layer is not None:
                self.pairs.append((group, starts[layer]))

    def __call__(
        self, importance: Callable[[Any], Tensor | None], within: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        """Per-group scores, each tp group's vector first passed through `within` if given (NaN where the
        estimator has nothing to score, e.g. no BatchNorm)."""
        score = torch.full((self.count,), float("nan"))
        for group, start in self.pairs:
            values = importance(group)
            if values is not None:
                values = values.detach().float().cpu()
                score[start : start + len(values)] = within(values) if within is not None else values
        return score


class StructuredBaseline(SGDMethod):
    """SGD, one removal of the lowest-`score()` coupled groups at the prune step, fine-tuning with them at 0."""

    granularities: tuple[str, ...] = ("channel", "neuron")

    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.target = require_target(cfg.name, ctx)
        if ctx.prune.granularity not in self.granularities:
            raise RecipeError(
                f"prune.granularity: method '{cfg.name}' prunes {' or '.join(self.granularities)} "
                f"groups, not {ctx.prune.granularity!r}"
            )
        self.groups = build_groups(ctx.model, ctx.example_input, ctx.prune.granularity)
        self.pruned = torch.zeros(len(self.groups), dtype=torch.bool)
        self.prune_step = prune_epoch(ctx) * ctx.steps_per_epoch
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
        self._apply(pruned)
        table = self.groups.layer_table(pruned)
        kept, total = sum(r["kept"] for r in table), sum(r["total"] for r in table)
        return [
            Pruned(
                epoch=epoch + 1,
                global_step=global_step,
                newly_pruned=int(pruned.sum()),
                pruned_groups=int(pruned.sum()),
                total_groups=len(self.groups),
                channel_sparsity=1.0 - kept / max(1, total),
                layers=table,
                reason=f"{self.cfg.name}: target {self.target:.0%} of {kind}",
            )
        ]

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

    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
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
