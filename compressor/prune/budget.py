"""Meeting a pruning target on the *measured* network, shared by emmcmc and the structured baselines.

Per-group costs overlap (a conv's MACs count for both its output and its input channels), so summing them
misjudges a joint removal. Every scheme here therefore proposes a monotone family of pruned sets indexed by
a share in [0, 1] and bisects on the share until the physically shrunk network has lost the target fraction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from compressor.prune.groups import CostKind, GroupSet

BISECTION_STEPS = 12  # share resolution 2^-12 of the total cost


def remaining_cost(
    model: nn.Module, groups: GroupSet, pruned: Tensor, kind: CostKind, example: Tensor
) -> float:
    """MACs or parameters of `model` with `pruned` removed, measured on the shrunk copy (what a target is
    defined on); channel counts, and anything of masked-only granularities, come from the per-group costs."""
    from compressor.metrics import layer_macs, output_positions
    from compressor.prune.shrink import shrink

    if kind == "channels" or not groups.removable:
        costs = groups.costs(kind if groups.removable else "params").cpu()
        return float(costs[~pruned].sum())
    small = shrink(model, groups, pruned) if bool(pruned.any()) else model
    if kind == "macs":  # priced from widths: bisection compares many candidates, a traced count is slow
        return layer_macs(small, output_positions(model, example))
    return float(sum(p.numel() for p in small.parameters()))


def bisect_share(
    candidate: Callable[[float], Tensor], reduction: Callable[[Tensor], float], target: float
) -> tuple[float, Tensor, Tensor]:
    """Smallest share whose `candidate(share)` pruned set reaches `reduction(...) >= target`, with that set
    (share 1.0 when even the largest set falls short), and the largest candidate found short of the target
    (nothing pruned when none was)."""
    lo, hi = 0.0, 1.0
    best = (1.0, candidate(1.0))
    under = torch.zeros_like(best[1])
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        cand = candidate(mid)
        if reduction(cand) >= target:
            hi, best = mid, (mid, cand)
        else:
            lo, under = mid, cand
    return best[0], best[1], under


def _next_block(groups: GroupSet, pruned: Tensor, layer: int, order: Tensor, multiple: int) -> Tensor | None:
    """The lowest-`order` kept groups of `layer` whose removal takes its width to the next allowed one below
    (a positive multiple of `multiple`), or None when the layer is already at its narrowest."""
    members = (groups.layer_ids == layer).nonzero().squeeze(1)
    kept = members[~pruned[members]]
    narrower = (len(kept) - 1) // multiple * multiple
    if narrower <= 0:
        return None
    ranked = kept[torch.argsort(order[kept], stable=True)]
    return ranked[: len(kept) - narrower]


def land_on_target(
    groups: GroupSet,
    under: Tensor,
    over: Tensor,
    score: Tensor,
    reduction: Callable[[Tensor], float],
    target: float,
    multiple: int = 1,
    tolerance: float = 0.01,
) -> Tensor:
    """A pruned set that meets `target` within `tolerance` where one can be built from `under` (short of the
    target) by adding whole width steps of any layer, lowest mean `score` first.

    Rounding widths to `multiple` makes the candidate family jump (one more group can drop a residual-tied
    width by `multiple` channels across a whole stage), so the smallest family member past the target can
    remove several points more than asked; comparing methods at unequal cost would be unfair. Falls back to
    the set that overshoots least (`over` at worst)."""
    if not groups.removable:
        return over
    score = score.detach().cpu().double()
    current = under.clone()
    layers = list(range(len(groups.layers)))
    best, best_reduction = over, reduction(over)
    while layers:
        blocks = [(layer, block) for layer in layers
                  if (block := _next_block(groups, current, layer, score, multiple)) is not None]
        blocks.sort(key=lambda item: float(score[item[1]].mean()))
        for layer, block in blocks:
            trial = current.clone()
            trial[block] = True
            value = reduction(trial)
            if value < target:
                current = trial
                break
            if value <= target + tolerance:
                return trial
            if value < best_reduction:
                best, best_reduction = trial, value
            layers.remove(layer)
        else:
            break
    return best


def lowest_first(
    groups: GroupSet, score: Tensor, kind: CostKind, multiple: int = 1
) -> Callable[[float], Tensor]:
    """The candidate family of score-based schemes: the lowest-scoring groups whose summed cost stays within
    `share` of the total, never emptying a layer and keeping each layer's width a multiple of `multiple`
    (the best-scoring groups are restored: `GroupSet.round_kept`)."""
    score = score.detach().cpu().float()
    costs = groups.costs(kind if groups.removable else "params").cpu()
    order = torch.argsort(score, stable=True)
    cumulative = torch.cumsum(costs[order], 0) / costs.sum().clamp_min(1e-12)

    def candidate(share: float) -> Tensor:
        pruned = torch.zeros(len(groups), dtype=torch.bool)
        pruned[order[cumulative <= share]] = True
        return groups.round_kept(pruned, score, multiple) if groups.removable else pruned

    return candidate


def select_for_target(
    model: nn.Module,
    groups: GroupSet,
    score: Tensor,
    target: float,
    kind: CostKind,
    example: Tensor,
    multiple: int = 1,
) -> Tensor:
    """The lowest-scoring groups whose removal cuts the measured `kind` of `model` by at least `target` (and
    by at most a point more where widths allow), widths kept multiples of `multiple`."""
    reduction = reduction_of(model, groups, kind, example)
    _, over, under = bisect_share(lowest_first(groups, score, kind, multiple), reduction, target)
    return land_on_target(groups, under, over, score, reduction, target, multiple)


def reduction_of(model: nn.Module, groups: GroupSet, kind: CostKind, example: Tensor) -> Callable[[Tensor], float]:
    """pruned set -> the fraction of the dense network's measured `kind` its removal saves."""
    dense = remaining_cost(model, groups, torch.zeros(len(groups), dtype=torch.bool), kind, example)

    def reduction(pruned: Tensor) -> float:
        return 1.0 - remaining_cost(model, groups, pruned, kind, example) / dense

    return reduction
