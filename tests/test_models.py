"""Model registry: every architecture builds, runs at the sizes recipes use, and stays prunable."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from compressor.errors import CompressorError
from compressor.models import UnknownModelError, create_model, list_models, model_options

CIFAR_CONV = [
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34",
    "wrn", "wrn28_10", "wrn16_4", "wrn40_2", "vgg16_bn",
]  # fmt: skip
TORCHVISION = ["tv_resnet18", "tv_resnet50"]
NUM_CLASSES = 10  # CIFAR-10 size, so parameter counts compare with the papers; torchvision defaults to 1000

# Every model runs a forward at each shape; the last (smallest) one is also traced and pruned.
SHAPES: dict[str, list[tuple[int, ...]]] = {
    **{name: [(3, 32, 32), (1, 8, 8)] for name in CIFAR_CONV},
    **{name: [(3, 64, 64), (1, 64, 64)] for name in TORCHVISION},
    "mlp": [(20,), (1, 8, 8)],
}
# The generic `wrn` runs small; its defaults (= wrn28_10) are checked by parameter count instead.
OPTIONS: dict[str, dict[str, object]] = {"wrn": {"depth": 16, "widen": 2}}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Batches of two gain nothing from intra-op threads, and on a shared CPU their spin-waits
    made this file several times slower; restore the setting for other test files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@cache
def built(name: str, input_shape: tuple[int, ...]) -> nn.Module:
    """Build each (model, shape) once per session: the big ones take most of this file's time."""
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, input_shape=input_shape, **OPTIONS.get(name, {}))


@pytest.fixture(autouse=True, scope="module")
def free_models() -> Iterator[None]:
    """The cache holds ~1 GB of weights; drop it before other test files run."""
    yield
    built.cache_clear()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family() -> None:
    assert set(list_models()) == set(SHAPES)
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n, shapes in SHAPES.items() for s in shapes])
def test_forward_gives_one_logit_per_class(name: str, shape: tuple[int, ...]) -> None:
    model = built(name, shape)
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert model.input_shape == shape


@pytest.mark.parametrize("name", list(SHAPES))
def test_classifier_name_points_at_the_output_linear(name: str) -> None:
    model = built(name, SHAPES[name][0])
    assert isinstance(model.classifier_name, str)
    head = model.get_submodule(model.classifier_name)
    assert isinstance(head, nn.Linear)
    assert head.out_features == NUM_CLASSES


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("resnet20", 0.270e6, 0.275e6),  # paper (option A): 0.27M; option B adds ~2.8k projection weights
        ("resnet56", 0.850e6, 0.860e6),  # paper: 0.85M
        ("resnet18", 11.1e6, 11.2e6),
        ("wrn28_10", 36.4e6, 36.6e6),  # paper: 36.5M
        ("wrn16_4", 2.7e6, 2.8e6),  # paper: 2.7M
        ("vgg16_bn", 14.7e6, 14.8e6),
    ],
)
def test_parameter_counts_match_the_papers(name: str, low: float, high: float) -> None:
    assert low <= param_count(built(name, (3, 32, 32))) <= high


def test_wrn_defaults_are_wrn28_10() -> None:
    with torch.device("meta"):  # shapes only: skips allocating and initialising another 36M weights
        default = create_model("wrn", num_classes=NUM_CLASSES, input_shape=(3, 32, 32))
    assert param_count(default) == param_count(built("wrn28_10", (3, 32, 32)))


def test_tv_resnet_keeps_rgb_stem_and_replaces_others() -> None:
    assert built("tv_resnet18", (3, 64, 64)).conv1.in_channels == 3
    grey = built("tv_resnet18", (1, 64, 64))
    assert grey.conv1.in_channels == 1
    assert grey.conv1.out_channels == 64


def test_mlp_options_shape_the_network() -> None:
    model = create_model(
        "mlp", num_classes=3, input_shape=(5,), hidden=[16, 8, 4], dropout=0.25, batchnorm=True
    )
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 16), (16, 8), (8, 4), (4, 3)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 3
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.25}
    assert model(torch.randn(4, 5)).shape == (4, 3)


def test_wrn_depth_and_widen_set_the_architecture() -> None:
    model = create_model("wrn", num_classes=10, input_shape=(3, 32, 32), depth=16, widen=4, dropout=0.3)
    assert param_count(model) == param_count(built("wrn16_4", (3, 32, 32)))
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}


def test_model_options_name_what_builders_accept() -> None:
    assert model_options("wrn") == {"depth", "widen", "dropout"}
    assert model_options("wrn28_10") == {"dropout"}
    assert model_options("mlp") == {"hidden", "dropout", "batchnorm"}
    assert model_options("resnet20") == set()


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(UnknownModelError) as caught:
        create_model("resnet21", num_classes=10, input_shape=(3, 32, 32))
    assert str(caught.value) == f"unknown model 'resnet21' (known: {', '.join(list_models())})"
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        model_options("nope")


def test_unknown_option_lists_the_known_options() -> None:
    with pytest.raises(UnknownModelError) as caught:
        create_model("wrn", num_classes=10, input_shape=(3, 32, 32), widht=4)
    assert str(caught.value) == "unknown option 'widht' for model 'wrn' (known: depth, dropout, widen)"
    with pytest.raises(UnknownModelError, match=r"for model 'resnet20' \(known: none\)"):
        create_model("resnet20", num_classes=10, input_shape=(3, 32, 32), depth=20)


@pytest.mark.parametrize(
    ("name", "shape", "options", "message"),
    [
        ("wrn", (3, 32, 32), {"depth": 30}, "6n\\+4"),
        ("wrn16_4", (3, 32, 32), {"dropout": 1.0}, "'wrn16_4'.*dropout"),
        ("mlp", (20,), {"hidden": "256"}, "list of widths"),
        ("mlp", (20,), {"hidden": [64, 0]}, "positive integer"),
        ("mlp", (20,), {"batchnorm": "yes"}, "true or false"),
        ("resnet20", (20,), {}, r"needs image input \(C, H, W\)"),
        ("vgg16_bn", (3, 0, 32), {}, "input_shape must be positive"),
    ],
)
def test_bad_option_values_are_rejected(
    name: str, shape: tuple[int, ...], options: dict[str, object], message: str
) -> None:
    with pytest.raises(UnknownModelError, match=message):
        create_model(name, num_classes=10, input_shape=shape, **options)


def test_sizes_from_numpy_and_torch_are_accepted_but_floats_are_not() -> None:
    model = create_model("mlp", num_classes=np.int64(3), input_shape=torch.Size([np.int64(5)]))
    assert model.input_shape == (5,)
    assert type(model.input_shape[0]) is int
    assert model.get_submodule(model.classifier_name).out_features == 3
    with pytest.raises(UnknownModelError, match="num_classes must be a positive integer, got 3.0"):
        create_model("mlp", num_classes=3.0, input_shape=(5,))  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError, match="input_shape must be positive integers"):
        create_model("mlp", num_classes=3, input_shape=(5.0,))  # type: ignore[arg-type]


def test_error_is_a_value_error_and_a_recipe_level_compressor_error() -> None:
    assert issubclass(UnknownModelError, ValueError)
    assert issubclass(UnknownModelError, CompressorError)
    assert UnknownModelError.exit_code == 2


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [(name, shapes[-1], {}) for name, shapes in SHAPES.items()] + [("mlp", (20,), {"batchnorm": True})],
)
def test_dependency_graph_traces_and_prunes_one_channel_and_still_trains(
    name: str, shape: tuple[int, ...], options: dict[str, object]
) -> None:
    """The largest group is the residual stream where there is one: the coupling most likely to break."""
    model = (
        copy.deepcopy(built(name, shape))
        if not options
        else create_model(name, num_classes=NUM_CLASSES, input_shape=shape, **options)
    )
    model.eval()  # tracing runs one example; BatchNorm1d cannot take a batch of one in train mode
    head = model.get_submodule(model.classifier_name)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, *shape))
    groups = list(graph.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear]))
    assert groups
    group = max(groups, key=len)
    root = group[0].dep.target.module
    width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
    before = param_count(model)

    group.prune(idxs=[0])

    assert (root.out_channels if isinstance(root, nn.Conv2d) else root.out_features) == width - 1
    assert param_count(model) < before
    assert head.out_features == NUM_CLASSES
    model.train()
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, NUM_CLASSES)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
