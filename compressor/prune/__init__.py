"""Structured pruning: traced parameter groups (`groups`) and physical removal (`shrink`)."""

from compressor.prune.groups import GRANULARITIES, Group, GroupSet, Slice, build_groups, channel_widths
from compressor.prune.shrink import pruned_spec, rebuild, shrink

__all__ = [
    "GRANULARITIES",
    "Group",
    "GroupSet",
    "Slice",
    "build_groups",
    "channel_widths",
    "pruned_spec",
    "rebuild",
    "shrink",
]
