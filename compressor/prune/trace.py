"""Tracing a model into its prunable groups: torch-pruning's DependencyGraph for coupled channel groups (one
trace per model, kept in the GroupSet so importance scores read the same groups), forward hooks for the
per-sample output positions that price MACs, and plain enumeration for kernel and feature groups."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from compressor.prune.groups import GRANULARITIES, GroupSet, PruneFn, _Axis, channel_widths, eval_mode


@contextlib.contextmanager
def _recording_positions(model: nn.Module) -> Iterator[dict[nn.Module, int]]:
    """While active, record output positions per sample (H*W for a conv, 1 for a plain linear) of each
    conv/linear, in the order they first run, which is also how "the first Linear layer" is found."""
    positions: dict[nn.Module, int] = {}

    def record(module: nn.Module, _inputs: object, output: Tensor) -> None:
        channels = output.shape[1] if isinstance(module, _ConvNd) else output.shape[-1]
        positions[module] = positions.get(module, 0) + output.numel() // (output.shape[0] * channels)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, _ConvNd | nn.Linear)]
    try:
        yield positions
    finally:
        for hook in hooks:
            hook.remove()


class _Builder:
    """Accumulates group ids per (parameter, kind) while groups are discovered."""

    def __init__(self, positions: Mapping[nn.Module, int]) -> None:
        self.positions = positions
        self.axes: dict[tuple[str, str], _Axis] = {}

    def add(
        self, module_name: str, module: nn.Module, attr: str, kind: str, dim: int, index: Tensor, ids: Tensor
    ) -> None:
        param = getattr(module, attr)
        if param is None:
            return
        param_name = f"{module_name}.{attr}" if module_name else attr
        axis = self.axes.get((param_name, kind))
        if axis is None:
            split = (0, 1) if kind == "kernel" else (dim,)
            shape = [size if d in split else 1 for d, size in enumerate(param.shape)]
            gid = torch.full(shape, -1, dtype=torch.long)
            per_position = param.numel() // gid.numel()
            cost = per_position * self.positions.get(module, 0) if attr == "weight" else 0  # 0 for norms
            axis = _Axis(param_name, param, module_name, kind, dim, gid, torch.full(shape, float(cost)))
            self.axes[(param_name, kind)] = axis
        flat = axis.gid.view(-1)
        if bool((flat[index] >= 0).any()):
            raise ValueError(f"{param_name}: torch-pruning put one {kind} slice in two groups")
        flat[index] = ids


def _role(name: str, module: nn.Module, handler: PruneFn) -> str:
    """How a dependency touches `module`: its "out"puts, "in"puts, "norm" affine or "prelu" slope."""
    if isinstance(module, _ConvNd):
        depthwise = module.groups == module.in_channels == module.out_channels
        if module.transposed or module.groups > 1 and not depthwise:
            raise ValueError(
                f"cannot prune channels of {name!r}: grouped/transposed convolutions are unsupported"
            )
        if module.groups > 1:  # depthwise: its inputs and outputs are the same channels
            return "out"
        return "out" if handler.__name__ == "prune_out_channels" else "in"
    if isinstance(module, nn.Linear):
        return "out" if handler.__name__ == "prune_out_channels" else "in"
    if isinstance(module, _BatchNorm | _InstanceNorm):
        if module.weight is None:
            raise ValueError(
                f"cannot prune channels through {name!r}: a norm layer without affine parameters "
                "emits -mean/std, not 0, for a zeroed channel"
            )
        return "norm"
    if isinstance(module, nn.PReLU):
        return "prelu"
    raise ValueError(
        f"cannot prune channels through {name!r} ({type(module).__name__}): zeroing a channel there "
        "does not equal removing it"
    )


_SLICES = {
    "out": (("weight", "out_weight", 0), ("bias", "out_bias", 0)),
    "in": (("weight", "in_weight", 1),),
    "norm": (("weight", "bn_weight", 0), ("bias", "bn_bias", 0)),
    "prelu": (("weight", "prelu_weight", 0),),
}


def _channel_groups(
    model: nn.Module,
    graph: tp.DependencyGraph,
    classifier: nn.Module,
    roots: tuple[type, ...],
    builder: _Builder,
) -> tuple[list[str], Tensor, list[tuple[str, PruneFn, Tensor, Tensor]], list[tuple[Any, int]]]:
    """Coupled groups from torch-pruning's DependencyGraph, ordered by their layer's place in the model."""
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    found = []
    for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=list(roots)):
        items = []
        for item in group.items:
            target = item.dep.target
            if target.type == tp.ops.OPTYPE.OUTPUT:  # a channel that is a model output is never prunable
                items = []
                break
            if target.module not in names:
                if isinstance(target.module, nn.Parameter):
                    raise ValueError(
                        "cannot prune channels through a bare nn.Parameter outside standard layers"
                    )
                continue
            name = names[target.module]
            role = _role(name, target.module, item.dep.handler)
            items.append((name, target.module, role, item.dep.handler, item.idxs, item.root_idxs))
        if items:
            # Name the group after the earliest output layer numbered like the group's channels (all of
            # them, in the root's order): a concatenation's branches hold only part of them.
            width = len(group[0].idxs)
            numbered = [
                i[0] for i in items if i[2] == "out" and len(i[4]) == width and list(i[4]) == list(i[5])
            ]
            layer = min(numbered, key=order.__getitem__)
            found.append((order[layer], layer, width, items, group))
    found.sort(key=lambda entry: entry[0])

    layers, layer_ids, traced = [], [], []
    removals: dict[tuple[str, PruneFn], list[tuple[Tensor, Tensor]]] = {}
    base = 0
    for layer_id, (_, layer, width, items, group) in enumerate(found):
        layers.append(layer)
        traced.append((group, base))
        layer_ids.append(torch.full((width,), layer_id, dtype=torch.long))
        for name, module, role, handler, idxs, root_idxs in items:
            index = torch.tensor(idxs, dtype=torch.long)
            ids = base + torch.tensor(root_idxs, dtype=torch.long)
            for attr, kind, dim in _SLICES[role]:
                builder.add(name, module, attr, kind, dim, index, ids)
            removals.setdefault((name, handler), []).append((index, ids))
        base += width
    plan = [
        (name, handler, torch.cat([i for i, _ in parts]), torch.cat([g for _, g in parts]))
        for (name, handler), parts in removals.items()
    ]
    return layers, torch.cat(layer_ids) if layer_ids else torch.zeros(0, dtype=torch.long), plan, traced


def _unit_groups(
    model: nn.Module, modules: list[nn.Module], granularity: str, builder: _Builder
) -> tuple[list[str], Tensor]:
    """Masked-only groups: every kernel of each conv, or every input column of one Linear layer."""
    names = {module: name for name, module in model.named_modules()}
    layers, parts, base = [], [], 0
    for layer_id, module in enumerate(modules):
        weight = module.weight
        count = weight.shape[0] * weight.shape[1] if granularity == "kernel" else weight.shape[1]
        ids = torch.arange(count)
        kind = "kernel" if granularity == "kernel" else "in_weight"
        builder.add(names[module], module, "weight", kind, 1, ids, base + ids)
        layers.append(names[module])
        parts.append(torch.full((count,), layer_id, dtype=torch.long))
        base += count
    return layers, torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def build_groups(model: nn.Module, example_input: Tensor, granularity: str = "channel") -> GroupSet:
    """Trace `model` (which must name its output layer in `classifier_name`) on `example_input` (a batch)
    and return its groups: "channel" (coupled channel groups, physically removable), "neuron" (the same
    restricted to Linear layers), "kernel" (each k x k kernel of each conv, masked only) or "feature"
    (input columns of the first Linear layer, masked only)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r} (known: {', '.join(GRANULARITIES)})")
    classifier_name = getattr(model, "classifier_name", None)
    if not isinstance(classifier_name, str):
        raise TypeError("model must name its output nn.Linear in a `classifier_name` attribute")
    classifier = model.get_submodule(classifier_name)
    coupled = granularity in ("channel", "neuron")
    with eval_mode(model), _recording_positions(model) as positions:
        if coupled:  # torch-pruning's trace is the one forward pass (it needs autograd)
            with torch.enable_grad():
                graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=(example_input,), verbose=False
                )
        else:
            with torch.no_grad():
                model(example_input)
    builder = _Builder(positions)
    removals: list[tuple[str, PruneFn, Tensor, Tensor]] = []
    traced: list[tuple[Any, int]] = []
    if coupled:
        roots = (_ConvNd, nn.Linear) if granularity == "channel" else (nn.Linear,)
        layers, layer_ids, removals, traced = _channel_groups(model, graph, classifier, roots, builder)
    elif granularity == "kernel":
        convs = [
            m for m in model.modules() if isinstance(m, _ConvNd) and m in positions and m is not classifier
        ]
        layers, layer_ids = _unit_groups(model, convs, granularity, builder)
    else:
        first = next((m for m in positions if isinstance(m, nn.Linear)), None)
        layers, layer_ids = _unit_groups(model, [first] if first is not None else [], granularity, builder)
    if not layers:
        raise ValueError(f"model has no prunable {granularity} groups")
    return GroupSet(
        granularity, list(builder.axes.values()), layers, layer_ids, removals, channel_widths(model), traced
    )
