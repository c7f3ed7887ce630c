"""Physical removal of pruned channel groups, and a saved description that re-applies it.

A shrunk network has different tensor shapes than the dense architecture, so its state_dict cannot be
loaded into a freshly built model. `pruned_spec` records which channels went (plain JSON); `rebuild`
applies that to a fresh dense model, after which the shrunk state_dict loads with `weights_only=True`.

Policy for a layer whose every channel is pruned: refuse (ValueError). A zero-width layer would cut the
network, so callers keep at least one channel per layer with `GroupSet.round_kept` before zeroing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from compressor.prune.groups import GroupSet, channel_widths
from compressor.prune.trace import build_groups

__all__ = ["SPEC_FORMAT", "channel_widths", "pruned_spec", "rebuild", "shrink"]

SPEC_FORMAT = 1


def _remove(model: nn.Module, groups: GroupSet, pruned: Tensor) -> None:
    """Remove the pruned groups' slices from `model` (structurally the one `groups` was built on)."""
    emptied = groups.emptied_layers(pruned) if groups.removable else []
    if emptied:
        raise ValueError(
            f"pruning would remove every channel of {', '.join(emptied)}; keep at least one "
            "(GroupSet.round_kept) so no layer has zero width"
        )
    for name, prune_fn, indices in groups.removals(pruned):
        prune_fn(model.get_submodule(name), indices)


def shrink(model: nn.Module, groups: GroupSet, pruned: Tensor) -> nn.Module:
    """A deep copy of `model` with every pruned channel/neuron group physically removed (classifier outputs
    are never in a group). Kernel and feature groups are masked only, so for them this is a plain copy."""
    shrunk = copy.deepcopy(model)
    _remove(shrunk, groups, pruned)
    return shrunk


def pruned_spec(groups: GroupSet, pruned: Tensor) -> dict[str, Any]:
    """Plain-JSON record of what `shrink` removes: {"format", "granularity", "pruned": {layer: [channels]},
    "widths": {conv/linear: out width after shrinking}}. Masked-only granularities record nothing pruned."""
    mask = pruned.bool().cpu()
    removed: dict[str, list[int]] = {}
    if groups.removable:
        for g in mask.nonzero().squeeze(1).tolist():
            removed.setdefault(groups.layers[int(groups.layer_ids[g])], []).append(
                int(groups.channel_index[g])
            )
    widths = dict(groups.widths)
    for name, prune_fn, indices in groups.removals(mask):
        if name in widths and prune_fn.__name__ == "prune_out_channels":
            widths[name] -= len(indices)
    return {"format": SPEC_FORMAT, "granularity": groups.granularity, "pruned": removed, "widths": widths}


def rebuild(model: nn.Module, example_input: Tensor, spec: Mapping[str, Any]) -> nn.Module:
    """Re-apply a `pruned_spec` to a freshly built dense `model`, in place (and return it).

    The groups are re-traced on the fresh model, which gives the same layers and channel numbering for
    the same architecture; the recorded widths are checked so a spec from another architecture fails here.
    """
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"unsupported pruned spec format {spec.get('format')!r} (expected {SPEC_FORMAT})")
    if spec["pruned"]:
        groups = build_groups(model, example_input, spec["granularity"])
        _remove(model, groups, groups.select(spec["pruned"]))
    widths = channel_widths(model)
    if widths != dict(spec["widths"]):
        wrong = sorted(
            name
            for name in widths.keys() | spec["widths"].keys()
            if widths.get(name) != spec["widths"].get(name)
        )
        raise ValueError(f"pruned spec does not fit this model: widths differ at {', '.join(wrong[:5])}")
    return model
