"""Structured pruning: traced parameter groups (`groups`), meeting a target on the measured network
(`budget`), importance scores on the traced groups (`importance`) and physical removal (`shrink`)."""

from compressor.prune.budget import (
    bisect_share,
    land_on_target,
    reduction_of,
    remaining_cost,
    select_for_target,
)
from compressor.prune.groups import GRANULARITIES, Group, GroupSet, Slice, channel_widths
from compressor.prune.importance import group_scores
from compressor.prune.shrink import pruned_spec, rebuild, shrink
from compressor.prune.trace import build_groups

__all__ = [
    "GRANULARITIES",
    "Group",
    "GroupSet",
    "Slice",
    "bisect_share",
    "build_groups",
    "channel_widths",
    "group_scores",
    "land_on_target",
    "pruned_spec",
    "rebuild",
    "reduction_of",
    "remaining_cost",
    "select_for_target",
    "shrink",
]
