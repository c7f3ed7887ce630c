"""Torch-Pruning importance estimators evaluated on our coupled groups.

Both sides come from the one `DependencyGraph` trace that built the `GroupSet`: each traced torch-pruning group
is kept with the id of its root index 0, and our group ids are that base plus the root indices, so a score
vector lands on our numbering without any mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from compressor.prune.groups import GroupSet


def group_scores(
    groups: GroupSet,
    importance: Callable[[Any], Tensor | None],
    within: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Per-group scores, each traced group's vector first passed through `within` if given (NaN where the
    estimator has nothing to score, e.g. no BatchNorm, and for granularities without traced groups)."""
    score = torch.full((len(groups),), float("nan"))
    for group, start in groups.traced:
        values = importance(group)
        if values is not None:
            values = values.detach().float().cpu()
            score[start : start + len(values)] = within(values) if within is not None else values
    return score
