"""Group discovery and physical shrinking: a pruned (zeroed) network must compute exactly what the shrunk one
computes, for every registered model, and the group costs/statistics must mean what they claim."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compressor.models import create_model, list_models
from compressor.prune import GroupSet, build_groups, channel_widths, pruned_spec, rebuild, shrink

# Inputs are as small as the architectures allow so the whole registry stays fast: torchvision nets at
# 32x32 (their 32x downsampling ends at 1x1), a few small CIFAR nets at 16x16 RGB, every other net at
# 8x8 grey (which also exercises non-RGB stems); the generic `wrn` builder at a small size.
SMALL = {"resnet20", "resnet32", "wrn", "wrn16_4"}
OPTIONS = {"wrn": {"depth": 10, "widen": 2}}


def _input_shape(name: str) -> tuple[int, ...]:
    if name == "mlp":
        return (20,)
    if name.startswith("tv_"):
        return (3, 32, 32)
    return (3, 16, 16) if name in SMALL else (1, 8, 8)


def _randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN affine parameters and biases, so a forgotten beta or bias would show in the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.5, generator=generator)
            elif isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.5, generator=generator)


def _move_running_stats(model: nn.Module, shape: tuple[int, ...], generator: torch.Generator) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, *shape, generator=generator, dtype=torch.float64) * 2 + 0.5)
    model.eval()


def _random_pruned(groups: GroupSet, fraction: float, generator: torch.Generator) -> torch.Tensor:
    pruned = torch.rand(len(groups), generator=generator) < fraction
    return groups.round_kept(pruned)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1, bias=False),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 2),
    )
    model.classifier_name = "8"
    return model


class OddNet(nn.Module):
    """Concatenation, a bias-only branch, a depthwise conv, flatten into a hidden Linear: the couplings the
    registry's models do not exercise."""

    classifier_name = "head"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.a_bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(8, 6, 1)
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10, bias=False)
        self.dw_bn = nn.BatchNorm2d(10)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(40, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.cat([torch.relu(self.a_bn(self.a(x))), torch.relu(self.b(x))], dim=1)
        x = torch.relu(self.dw_bn(self.dw(x)))
        return self.head(torch.relu(self.hidden(torch.flatten(self.pool(x), 1))))


def _check_invariant(model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    model = model.double()
    _randomise(model, generator)
    _move_running_stats(model, shape, generator)
    x = torch.randn(2, *shape, generator=generator, dtype=torch.float64)
    groups = build_groups(model, x)
    pruned = _random_pruned(groups, 0.3, generator)
    assert pruned.any()
    groups.zero_(pruned)
    shrunk = shrink(model, groups, pruned)
    with torch.no_grad():
        masked_out, shrunk_out = model(x), shrunk(x)
    assert (masked_out - shrunk_out).abs().max().item() <= 1e-5
    assert masked_out.abs().max().item() > 1e-3  # the comparison is not between two zero outputs
    assert _count(shrunk) < _count(model)


@pytest.mark.parametrize("name", list_models())
def test_masked_model_equals_shrunk_model(name: str) -> None:
    shape = _input_shape(name)
    model = create_model(name, num_classes=10, input_shape=shape, **OPTIONS.get(name, {}))
    _check_invariant(model, shape, seed=len(name))


def test_masked_equals_shrunk_through_concat_depthwise_and_flatten() -> None:
    groups = build_groups(OddNet(), torch.randn(2, 3, 8, 8))
    assert groups.layers == ["stem", "dw", "hidden"]  # the depthwise conv ties both concat branches
    b1 = groups.groups[8 + 5]  # after the stem's 8 groups: concatenated channel 5 = b's channel 1
    where = {p.param_name: p.index.tolist() for p in b1.slices}
    assert "a.weight" not in where
    assert where["b.weight"] == [1] and where["b.bias"] == [1]
    assert where["dw.weight"] == [5] and where["dw_bn.weight"] == [5]  # concat offset 4
    assert where["hidden.weight"] == [20, 21, 22, 23]  # flattened 2x2 positions of channel 5
    for seed in range(3):
        _check_invariant(OddNet(), (3, 8, 8), seed=seed)


def test_residual_stage_is_one_group_across_blocks() -> None:
    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16))
    groups = build_groups(model, torch.randn(2, 3, 16, 16))
    assert groups.layers[0] == "conv1"  # layers in model order, so group 0 is the stem's channel 0
    stem = groups.groups[0]
    by_kind: dict[str, set[str]] = {}
    for part in stem.slices:
        by_kind.setdefault(part.kind, set()).add(part.param_name)
    assert by_kind["out_weight"] == {"conv1.weight"} | {f"layers.0.{b}.conv2.weight" for b in range(3)}
    assert by_kind["bn_weight"] == {"bn1.weight"} | {f"layers.0.{b}.bn2.weight" for b in range(3)}
    assert by_kind["bn_bias"] == {"bn1.bias"} | {f"layers.0.{b}.bn2.bias" for b in range(3)}
    assert {"layers.1.0.conv1.weight", "layers.1.0.shortcut.0.weight"} <= by_kind["in_weight"]
    assert groups.costs("channels")[0].item() == 4  # the stem and three blocks lose a channel each
    assert groups.costs("params")[0].item() == sum(p.values().numel() for p in stem.slices)
    # three residual streams (16, 32, 64 channels) plus each block's internal channels
    assert len(groups) == 16 + 32 + 64 + 3 * (16 + 32 + 64)


def test_classifier_outputs_are_never_in_a_group() -> None:
    for name, shape in (("resnet20", (3, 16, 16)), ("mlp", (20,))):
        model = create_model(name, num_classes=10, input_shape=shape)
        groups = build_groups(model, torch.randn(2, *shape))
        head = model.classifier_name
        parts = [s for g in groups.groups for s in g.slices if s.param_name.startswith(head + ".")]
        assert parts and all(s.kind == "in_weight" and s.dim == 1 for s in parts)
        assert sum(len(s.index) for s in parts) == model.get_submodule(head).in_features


def test_feature_granularity_selects_input_columns_of_first_linear() -> None:
    model = create_model("mlp", num_classes=3, input_shape=(20,))
    groups = build_groups(model, torch.randn(2, 20), "feature")
    assert len(groups) == 20
    assert [groups.feature_index(g) for g in range(20)] == list(range(20))
    pruned = torch.zeros(20, dtype=torch.bool)
    pruned[[3, 7]] = True
    groups.zero_(pruned)
    first = model.features[1].weight
    assert (first[:, [3, 7]] == 0).all() and (first[:, [0, 1, 19]] != 0).all()
    assert channel_widths(shrink(model, groups, pruned)) == channel_widths(model)  # masked only


def test_kernel_granularity_has_one_group_per_kernel() -> None:
    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16))
    groups = build_groups(model, torch.randn(2, 3, 16, 16), "kernel")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(groups) == sum(c.out_channels * c.in_channels for c in convs)
    pruned = torch.zeros(len(groups), dtype=torch.bool)
    g = groups.layers.index("layers.1.0.conv1")
    start = int((groups.layer_ids < g).sum())
    pruned[start + 5 * 16 + 2] = True  # kernel (out 5, in 2) of a 16 -> 32 conv
    weight = model.get_submodule("layers.1.0.conv1").weight
    groups.zero_(pruned)
    assert (weight[5, 2] == 0).all()
    assert int((weight == 0).sum()) == 9
    tiny = build_groups(_tiny(), torch.randn(2, 3, 8, 8), "kernel")
    assert len(tiny) == 4 * 3 + 5 * 4 and tiny.layers == ["0", "3"]
    (kernel,) = tiny.groups[12 + 2 * 4 + 1].slices  # kernel (out 2, in 1) of the second conv
    assert (kernel.param_name, kernel.row, kernel.index.tolist()) == ("3.weight", 2, [1])
    assert torch.equal(kernel.values()[0], kernel.param[2, 1].detach())


def test_neuron_granularity_is_channel_groups_of_linear_layers() -> None:
    model = create_model("mlp", num_classes=3, input_shape=(20,), hidden=[16, 8])
    groups = build_groups(model, torch.randn(2, 20), "neuron")
    assert len(groups) == 24 and groups.layers == ["features.1", "features.4"]


def test_broadcast_shapes_and_values() -> None:
    model = _tiny()
    groups = build_groups(model, torch.randn(2, 3, 8, 8))
    assert len(groups) == 9 and groups.layers == ["0", "3"]
    values = torch.arange(1.0, 10.0)  # groups 0-3: conv 0 outputs, 4-8: conv 3 outputs
    summed = groups.broadcast(values, combine="sum", fill=0.0)
    conv2 = model[3].weight
    a, b = values[4:].view(5, 1, 1, 1), values[:4].view(1, 4, 1, 1)
    assert summed[conv2].shape == (5, 4, 1, 1) and torch.equal(summed[conv2], a + b)
    assert summed[model[0].weight].shape == (4, 1, 1, 1)
    assert torch.equal(summed[model[1].bias], values[:4])
    assert summed[model[8].weight].shape == (1, 5) and torch.equal(summed[model[8].weight][0], values[4:])
    assert model[8].bias not in summed  # classifier outputs belong to no group
    assert torch.equal(groups.broadcast(values, combine="prod", fill=1.0)[conv2], a * b)
    keep = torch.ones(9, dtype=torch.bool)
    keep[[1, 6]] = False
    mask = groups.broadcast(keep, combine="prod", fill=True)[conv2].expand_as(conv2)
    assert int((~mask).sum()) == (5 + 4 - 1) * 9


def test_statistic_ignores_scale_of_weights_feeding_batchnorm() -> None:
    model = _tiny()
    groups = build_groups(model, torch.randn(2, 3, 8, 8))
    assert torch.allclose(groups.statistic(), torch.full((9,), 0.5))  # gamma 1, beta 0
    assert torch.equal(groups.sizes(), torch.full((9,), 2.0))
    with torch.no_grad():
        model[0].weight.mul_(10.0)
        model[1].weight[2] = 0.1
    stat = groups.statistic()
    assert stat[2].item() == pytest.approx(0.01 / 2) and torch.allclose(
        stat[[0, 1, 3]], torch.full((3,), 0.5)
    )


def test_statistic_without_batchnorm_is_normalised_for_channels_and_raw_for_neurons() -> None:
    model = create_model("mlp", num_classes=3, input_shape=(20,), hidden=[16, 8])
    x = torch.randn(2, 20)
    channel, neuron = build_groups(model, x), build_groups(model, x, "neuron")
    before_channel, before_neuron = channel.statistic(), neuron.statistic()
    assert channel.statistic().mean().item() == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():
        model.features[1].weight.mul_(10.0)
    assert torch.allclose(channel.statistic(), before_channel, rtol=1e-4)
    assert torch.allclose(neuron.statistic()[:16], before_neuron[:16] * 100, rtol=1e-4)
    assert torch.equal(neuron.sizes()[:16], torch.full((16,), 21.0))  # 20 weights + bias per row


def test_spec_rebuild_reproduces_shrunk_shapes_and_loads_its_weights() -> None:
    generator = torch.Generator().manual_seed(1)
    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    _randomise(model, generator)
    groups = build_groups(model, x)
    pruned = _random_pruned(groups, 0.4, generator)
    groups.zero_(pruned)
    shrunk = shrink(model, groups, pruned)
    spec = json.loads(json.dumps(pruned_spec(groups, pruned)))
    assert spec["widths"] == channel_widths(shrunk)
    buffer = io.BytesIO()
    torch.save(shrunk.state_dict(), buffer)
    buffer.seek(0)
    fresh = rebuild(create_model("resnet20", num_classes=10, input_shape=(3, 16, 16)), x, spec)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval(), shrunk.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), shrunk(x))
    other = create_model("resnet20", num_classes=100, input_shape=(3, 16, 16))
    with pytest.raises(ValueError, match="widths differ at fc"):
        rebuild(other, x, spec)


def _macs(model: nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / x.shape[0]


def test_mac_costs_match_measured_drop() -> None:
    generator = torch.Generator().manual_seed(2)
    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16)).eval()
    x = torch.randn(1, 3, 16, 16)
    groups = build_groups(model, x)
    macs = groups.costs("macs")
    dense = _macs(model, x)
    for layer in ("conv1", "layers.1.0.conv1", "layers.2.0.conv2"):
        pruned = groups.select({layer: [0, 3, 5]})
        drop = dense - _macs(shrink(model, groups, pruned), x)
        assert macs[pruned].sum().item() == pytest.approx(drop, rel=1e-6)
    pruned = _random_pruned(groups, 0.1, generator)
    shrunk = shrink(model, groups, pruned)
    assert macs[pruned].sum().item() == pytest.approx(dense - _macs(shrunk, x), rel=0.1)
    params = groups.costs("params")
    assert params[pruned].sum().item() == pytest.approx(_count(model) - _count(shrunk), rel=0.1)


def test_emptying_a_layer_is_refused_and_keep_one_prevents_it() -> None:
    model = _tiny()
    groups = build_groups(model, torch.randn(2, 3, 8, 8))
    pruned = groups.select({"0": [0, 1, 2, 3], "3": [1]})
    assert groups.emptied_layers(pruned) == ["0"]
    with pytest.raises(ValueError, match="every channel of 0"):
        shrink(model, groups, pruned)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, 0.9, 0.3, 0.2]))
    kept = groups.round_kept(pruned)
    assert kept.tolist() == [True, False, True, True, False, True, False, False, False]
    assert channel_widths(shrink(model, groups, kept)) == {"0": 1, "3": 4, "8": 2}
    assert groups.layer_table(kept) == [
        {"layer": "0", "kept": 1, "total": 4},
        {"layer": "3", "kept": 4, "total": 5},
    ]


def test_budget_selection_in_blocks_of_8_meets_the_measured_target() -> None:
    from compressor.prune.budget import remaining_cost, select_for_target

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16)).eval()
    example = torch.zeros(1, 3, 16, 16)
    groups = build_groups(model, example)
    score = torch.rand(len(groups))
    none = torch.zeros(len(groups), dtype=torch.bool)
    dense = remaining_cost(model, groups, none, "macs", example)
    for multiple in (1, 8):
        pruned = select_for_target(model, groups, score, 0.5, "macs", example, multiple)
        reduction = 1 - remaining_cost(model, groups, pruned, "macs", example) / dense
        assert 0.5 <= reduction < 0.56, (multiple, reduction)
        widths = channel_widths(shrink(model, groups, pruned))
        odd = {layer: w for layer, w in widths.items() if layer != model.classifier_name and w % 8}
        assert (not odd) if multiple == 8 else odd, odd  # any-width selection leaves odd widths
