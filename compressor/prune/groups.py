"""Prunable groups: which slices of which parameters must vanish together, traced, not hand-written.

A *coupled channel group* (the default granularity) holds every parameter slice that has to disappear for
one channel to be physically removable: the producing conv/linear's output channel and bias, its
BatchNorm gamma/beta, every consumer's input slice, and all channels tied to it through residual
additions or concatenations (torch-pruning's DependencyGraph merges those into one group). Zeroing a
group therefore makes the masked network compute exactly what the shrunk network computes: a BN
channel with gamma = beta = 0 emits 0 whatever its running statistics, and every reader of the
channel has its input slice zeroed too.

The hot paths (statistic, broadcast, zero_) never touch per-group Python objects: each parameter keeps
one small "group id" tensor broadcastable to it, so kernel granularity on a wide net stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

GRANULARITIES: tuple[str, ...] = ("channel", "kernel", "neuron", "feature")
CostKind = Literal["channels", "params", "macs"]
PruneFn = Callable[[nn.Module, list[int]], nn.Module]

_NORM_KINDS = frozenset({"bn_weight", "bn_bias"})
# The slices whose magnitude says how much a unit contributes when no BatchNorm rescales it.
_OWN_KINDS = {
    "channel": frozenset({"out_weight", "out_bias"}),
    "neuron": frozenset({"out_weight", "out_bias"}),
    "kernel": frozenset({"kernel"}),
    "feature": frozenset({"in_weight"}),
}
# Conv/linear weights in channel and kernel groups are (mostly) followed by BN, so only relative size means
# anything; neuron and feature selection follow the paper and use raw magnitudes.
_NORMALISED = {"channel": True, "kernel": True, "neuron": False, "feature": False}


@dataclass
class Slice:
    """One piece of one parameter: `param.index_select(dim, index)`, or for kernel slices
    `param[row].index_select(dim - 1, index)` (the single kernel `param[row, index]`)."""

    param_name: str
    param: nn.Parameter
    dim: int
    index: Tensor
    kind: str
    row: int | None = None

    def values(self) -> Tensor:
        """The slice's current values (a copy), for inspection and tests."""
        if self.row is None:
            return self.param.detach().index_select(self.dim, self.index.to(self.param.device))
        return self.param.detach()[self.row].index_select(self.dim - 1, self.index.to(self.param.device))


@dataclass
class Group:
    """One prunable unit: all slices that must vanish together. `layer` names the coupled layer (for
    channel groups the first conv/linear, in model order, whose whole output the group spans) and
    `channel` is the unit's position in it (root channel; input column; kernel `out * in_per_group + in`)."""

    slices: list[Slice]
    layer: str
    channel: int
    macs: float
    params: int


@dataclass
class _Axis:
    """Group ids of one parameter along the dims the groups split (`gid` is 1 on the other dims, -1 where
    no group owns a position); `macs` is the per-sample MAC count each position accounts for."""

    param_name: str
    param: nn.Parameter
    module: str
    kind: str
    dim: int
    gid: Tensor
    macs: Tensor

    @property
    def per_position(self) -> int:
        return self.param.numel() // self.gid.numel()

    def position_sum(self, values: Tensor) -> Tensor:
        """Sum of `values` (shaped like the parameter) per gid position, flattened like `gid`."""
        reduce = [d for d, size in enumerate(self.gid.shape) if size == 1 and self.param.shape[d] != 1]
        return (values.sum(dim=reduce, keepdim=True) if reduce else values).reshape(-1)

    def position_sq(self) -> Tensor:
        """Sum of squares of the parameter per gid position, flattened like `gid`."""
        return self.position_sum(self.param.detach().float().square())


class GroupSet:
    """All groups of one model at one granularity, with the vectorised maps the optimizer and pruner use.

    Statistic (the E-step's s_g; docs/algorithm.md#2-coupled-channel-groups): a group that contains BatchNorm
    (or InstanceNorm) affine slices uses the mean of gamma^2 and beta^2 over those slices - the scale of the
    channel's normalised output, which is what decides whether it contributes, since the conv weights
    feeding a BN are scale-invariant. Otherwise the statistic is the mean square of the group's own slices
    (output row + bias for channel/neuron groups, the kernel, the input column for feature groups); for
    channel and kernel granularity it is divided by the layer's mean square over its live (non-zero) units,
    so a typical unit scores ~1 whatever the layer's scale and hard-pruned units do not inflate the rest;
    neuron and feature groups use the raw mean square as the paper's variable selection does. A fresh BN
    channel (gamma = 1, beta = 0) scores 0.5. `sizes()` is the matching m_g (elements averaged over).

    Groups are numbered layer by layer in model order: `layers` names the coupled layers, `layer_ids[g]`
    is group g's layer, `channel_index[g]` its position there; `widths` are the dense conv/linear widths.
    """

    def __init__(
        self,
        granularity: str,
        axes: list[_Axis],
        layers: list[str],
        layer_ids: Tensor,
        removals: list[tuple[str, PruneFn, Tensor, Tensor]],
        widths: dict[str, int],
        traced: list[tuple[Any, int]] | None = None,
    ) -> None:
        self.granularity = granularity
        self.traced = traced or []  # (torch-pruning group, id of its root index 0): what importance scores read
        self.layers = layers
        self.layer_ids = layer_ids
        self.widths = widths
        self._axes = axes
        self._removals = removals
        count = len(layer_ids)
        starts = torch.cumsum(torch.bincount(layer_ids, minlength=len(layers)), 0)
        self._layer_start = torch.cat([torch.zeros(1, dtype=torch.long), starts[:-1]])
        self.channel_index = torch.arange(count) - self._layer_start[layer_ids]

        own = _OWN_KINDS[granularity]
        params, macs, channels = (torch.zeros(count, dtype=torch.float64) for _ in range(3))
        norm_m, own_m = torch.zeros(count), torch.zeros(count)
        for ax in axes:
            gid = ax.gid.reshape(-1)
            valid = gid >= 0
            ids = gid[valid]
            params.index_add_(0, ids, torch.full(ids.shape, float(ax.per_position), dtype=torch.float64))
            macs.index_add_(0, ids, ax.macs.reshape(-1)[valid].double())
            if ax.kind == "out_weight":
                channels.index_add_(0, ids, torch.ones(ids.shape, dtype=torch.float64))
            target = norm_m if ax.kind in _NORM_KINDS else own_m if ax.kind in own else None
            if target is not None:
                target.index_add_(0, ids, torch.full(ids.shape, float(ax.per_position)))
        self._has_norm = norm_m > 0
        self._sizes = torch.where(self._has_norm, norm_m, own_m)
        self._costs = {
            "params": params,
            "macs": macs,
            "channels": channels if self.removable else torch.ones(count, dtype=torch.float64),
        }

    def __len__(self) -> int:
        return len(self.layer_ids)

    @property
    def removable(self) -> bool:
        """Whether pruned groups can be physically removed (channel, neuron) or only masked."""
        return self.granularity in ("channel", "neuron")

    @property
    def device(self) -> torch.device:
        return self._axes[0].param.device

    def _sync(self) -> None:
        """Follow the model after `.to(device)` (which keeps the Parameter objects)."""
        for ax in self._axes:
            if ax.gid.device != ax.param.device:
                ax.gid = ax.gid.to(ax.param.device)

    def statistic(self) -> Tensor:
        """Per-group s_g (float32 on the model's device); see the class docstring for the definition."""
        self._sync()
        device = self.device
        norm_sq = torch.zeros(len(self), device=device)
        own_sq = torch.zeros(len(self), device=device)
        own_kinds = _OWN_KINDS[self.granularity]
        by_module: dict[str, list[tuple[_Axis, Tensor]]] = {}
        for ax in self._axes:
            if ax.kind in _NORM_KINDS:
                gid = ax.gid.reshape(-1)
                valid = gid >= 0
                norm_sq.index_add_(0, gid[valid].to(device), ax.position_sq()[valid].to(device))
            elif ax.kind in own_kinds:
                by_module.setdefault(ax.module, []).append((ax, ax.position_sq()))
        for entries in by_module.values():
            scale: Tensor | float = 1.0
            if _NORMALISED[self.granularity]:  # mean square over the layer's live units, without a sync
                total = torch.stack([sq for _, sq in entries]).sum(0)
                live = (total > 0).sum().clamp_min(1)
                per_position = sum(ax.per_position for ax, _ in entries)
                scale = (total.sum() / (per_position * live)).clamp_min(torch.finfo(total.dtype).tiny)
            for ax, sq in entries:
                gid = ax.gid.reshape(-1)
                valid = gid >= 0
                own_sq.index_add_(0, gid[valid].to(device), (sq[valid] / scale).to(device))
        sizes = self._sizes.to(device)
        return torch.where(self._has_norm.to(device), norm_sq, own_sq) / sizes

    @property
    def params(self) -> list[nn.Parameter]:
        """Every parameter some group has a slice of, once each."""
        return list({id(ax.param): ax.param for ax in self._axes}.values())

    def slice_sums(self, per_param: Mapping[nn.Parameter, Tensor]) -> Tensor:
        """Per group (float32, model's device): the sum of `per_param[p]` (shaped like p) over every slice of
        the group, e.g. sum(w * grad) over the producer's rows, its BatchNorm and every consumer's columns."""
        self._sync()
        out = torch.zeros(len(self), device=self.device)
        for ax in self._axes:
            values = per_param.get(ax.param)
            if values is None:
                continue
            gid = ax.gid.reshape(-1)
            valid = gid >= 0
            out.index_add_(0, gid[valid], ax.position_sum(values.float())[valid].to(out.device))
        return out

    def sizes(self) -> Tensor:
        """m_g: how many elements `statistic()` averages over (float32, model's device)."""
        return self._sizes.to(self.device)

    def costs(self, kind: CostKind) -> Tensor:
        """What removing each group saves (float64, model's device).

        "params": elements in all its slices. "macs": per-sample multiply-accumulates of every conv/linear
        it touches (an output slice costs k*k*C_in/groups*H*W, an input slice k*k*C_out*H*W), measured from
        output sizes at the example input; removing several groups of one layer pair counts their shared
        kernels twice, so the sum slightly overstates a joint removal. "channels": conv/linear output
        channels removed (a residual group removes one per tied layer); 1 per kernel or feature group.
        """
        if kind not in self._costs:
            raise ValueError(f"unknown cost kind {kind!r} (known: channels, params, macs)")
        return self._costs[kind].to(self.device)

    def broadcast(
        self, per_group: Tensor, *, combine: Literal["sum", "prod"], fill: float, functional: bool = False
    ) -> dict[nn.Parameter, Tensor]:
        """For every parameter a group touches, one small tensor broadcastable to it.

        A conv weight with output groups a[o] and input groups b[i] gets a.view(O,1,1,1) + b.view(1,I,1,1)
        ("sum", e.g. extra weight decay) or their product ("prod", e.g. 0/1 keep masks). `fill` stands for
        positions no group owns (the classifier's outputs), once per split dim, so pass the combine's
        identity (0 for sum, 1 for prod). Parameters no group touches are absent. `functional` leaves out
        the producer slices of groups that have a BatchNorm (they get `fill`): the BatchNorm undoes their
        scale, so shrinking them changes nothing the network computes, only the running statistics.
        """
        if combine not in ("sum", "prod"):
            raise ValueError(f"combine must be 'sum' or 'prod', got {combine!r}")
        if per_group.shape != (len(self),):
            raise ValueError(f"per_group must have shape ({len(self)},), got {tuple(per_group.shape)}")
        self._sync()
        extended: dict[torch.device, Tensor] = {}
        out: dict[nn.Parameter, Tensor] = {}
        for ax in self._axes:
            device = ax.param.device
            if device not in extended:
                values = per_group.to(device)
                extended[device] = torch.cat([values, values.new_full((1,), fill)])
            gid = ax.gid
            if functional and ax.kind in ("out_weight", "out_bias"):
                gid = torch.where(self._has_norm.to(gid.device)[gid.clamp_min(0)], torch.full_like(gid, -1), gid)
            part = extended[device][gid]  # gid -1 picks the trailing fill
            previous = out.get(ax.param)
            if previous is None:
                out[ax.param] = part
            else:
                out[ax.param] = previous + part if combine == "sum" else previous * part
        return out

    def zero_(self, pruned: Tensor) -> None:
        """Set every slice of the pruned groups exactly to 0, so the masked model equals the shrunk one."""
        keep = self.broadcast(~self._check_mask(pruned), combine="prod", fill=True)
        with torch.no_grad():
            for param, mask in keep.items():
                param.masked_fill_(~mask, 0.0)

    def _check_mask(self, pruned: Tensor) -> Tensor:
        if pruned.shape != (len(self),):
            raise ValueError(f"pruned must have shape ({len(self)},), got {tuple(pruned.shape)}")
        return pruned.bool()

    def layer_table(self, pruned: Tensor) -> list[dict]:
        """Per coupled layer: {"layer", "kept", "total"} groups, in model order, for reports."""
        pruned = self._check_mask(pruned).cpu()
        total = torch.bincount(self.layer_ids, minlength=len(self.layers))
        kept = torch.bincount(self.layer_ids[~pruned], minlength=len(self.layers))
        return [
            {"layer": name, "kept": int(k), "total": int(t)}
            for name, k, t in zip(self.layers, kept.tolist(), total.tolist(), strict=True)
        ]

    def emptied_layers(self, pruned: Tensor) -> list[str]:
        """Layers whose every group is pruned (physically removing them would leave a zero-width layer)."""
        return [row["layer"] for row in self.layer_table(pruned) if row["kept"] == 0]

    def round_kept(self, pruned: Tensor, score: Tensor | None = None, multiple: int = 1) -> Tensor:
        """`pruned` with, in each coupled layer, its highest-`score` pruned groups (default: the statistic)
        restored until the kept count is a positive multiple of `multiple` or the layer's full width.
        onnxruntime's fast blocked convolutions need widths in multiples of 8 (benchmarks/RESULTS.md), and
        no layer may be emptied. Ties (pruned groups are all zero) go to the lowest index."""
        if multiple < 1:
            raise ValueError(f"multiple must be a positive channel count, got {multiple}")
        pruned = self._check_mask(pruned).cpu().clone()
        counts = torch.bincount(self.layer_ids, minlength=len(self.layers))
        kept = torch.bincount(self.layer_ids[~pruned], minlength=len(self.layers))
        want = torch.minimum(counts, (kept.clamp_min(1) + multiple - 1) // multiple * multiple)
        short = (want > kept).nonzero().squeeze(1).tolist()
        if not short:
            return pruned
        score = (self.statistic() if score is None else score).detach().cpu()
        for layer_id in short:
            members = (self.layer_ids == layer_id).nonzero().squeeze(1)
            candidates = members[pruned[members]]
            order = torch.argsort(score[candidates], descending=True, stable=True)
            pruned[candidates[order[: int(want[layer_id] - kept[layer_id])]]] = False
        return pruned

    def select(self, channels: Mapping[str, Sequence[int]]) -> Tensor:
        """Boolean group mask from {layer: [channel positions]} (the inverse of `pruned_spec`)."""
        mask = torch.zeros(len(self), dtype=torch.bool)
        index = {name: i for i, name in enumerate(self.layers)}
        counts = torch.bincount(self.layer_ids, minlength=len(self.layers))
        for layer, positions in channels.items():
            if layer not in index:
                raise ValueError(f"no {self.granularity} groups in layer {layer!r}")
            layer_id = index[layer]
            for position in positions:
                if not 0 <= int(position) < int(counts[layer_id]):
                    raise ValueError(
                        f"layer {layer!r} has {int(counts[layer_id])} groups, not position {position}"
                    )
                mask[int(self._layer_start[layer_id]) + int(position)] = True
        return mask

    def feature_index(self, g: int) -> int:
        """Input column of the first Linear layer that feature group `g` selects (variable selection)."""
        if self.granularity != "feature":
            raise ValueError(f"feature_index needs granularity 'feature', not {self.granularity!r}")
        return int(self.channel_index[g])

    def removals(self, pruned: Tensor) -> list[tuple[str, PruneFn, list[int]]]:
        """Per module: the torch-pruning function and the original indices it must remove, all at once,
        so no removal shifts another's indices (empty for masked-only granularities)."""
        pruned = self._check_mask(pruned).cpu()
        plan = []
        for module, fn, positions, gids in self._removals:
            drop = positions[pruned[gids]]
            if len(drop):
                plan.append((module, fn, sorted(drop.tolist())))
        return plan

    @cached_property
    def groups(self) -> list[Group]:
        """Per-group objects for inspection and reports, built on first use (hot paths never need them)."""
        slices: list[list[Slice]] = [[] for _ in range(len(self))]
        for ax in self._axes:
            gid = ax.gid.reshape(-1).cpu()
            positions = (gid >= 0).nonzero().squeeze(1)
            ids = gid[positions]
            order = torch.argsort(ids, stable=True)
            positions, ids = positions[order], ids[order]
            unique, counts = torch.unique_consecutive(ids, return_counts=True)
            for g, chunk in zip(unique.tolist(), positions.split(counts.tolist()), strict=True):
                if ax.kind == "kernel":
                    row, column = divmod(int(chunk[0]), ax.gid.shape[1])
                    part = Slice(ax.param_name, ax.param, 1, torch.tensor([column]), ax.kind, row)
                else:
                    part = Slice(ax.param_name, ax.param, ax.dim, chunk, ax.kind)
                slices[g].append(part)
        macs, params = self._costs["macs"].tolist(), self._costs["params"].tolist()
        return [
            Group(
                slices[g],
                self.layers[int(self.layer_ids[g])],
                int(self.channel_index[g]),
                macs[g],
                int(params[g]),
            )
            for g in range(len(self))
        ]


def channel_widths(model: nn.Module) -> dict[str, int]:
    """Output channels/features of every conv and linear layer, by qualified name, for reports and checks."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, _ConvNd):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Trace in eval mode (no running-stat updates, no dropout) and restore each module's own flag."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag
