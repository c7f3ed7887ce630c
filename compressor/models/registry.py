"""Name -> builder registry, so recipes pick architectures by string and get one clear error when wrong."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any, SupportsIndex

from torch import nn

from compressor.errors import CompressorError

Builder = Callable[..., nn.Module]

# Every builder takes these two; they describe the data, not the architecture, so they are not "options".
_DATA_ARGS = frozenset({"num_classes", "input_shape"})

_REGISTRY: dict[str, Builder] = {}


class UnknownModelError(CompressorError, ValueError):
    """A model name, option name or option value a recipe asked for does not exist or does not fit.

    A `CompressorError` so the CLI prints it as one line with the recipe exit code; a `ValueError`
    so callers that only know "bad argument" still catch it.
    """

    exit_code = 2


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a builder under `name`.

    Builders take keyword-only `num_classes`, `input_shape` and their options (with defaults); the
    option names are read from the signature, so no `**kwargs` is allowed - it would hide typos.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        params = inspect.signature(builder).parameters
        if any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params.values()):
            raise TypeError(f"builder for {name!r} must take keyword-only arguments and no **kwargs")
        if not _DATA_ARGS <= params.keys():
            raise TypeError(f"builder for {name!r} must accept num_classes and input_shape")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered names, sorted, for `--help` text and error messages."""
    return sorted(_REGISTRY)


def _builder(name: str) -> Builder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r} (known: {', '.join(list_models())})") from None


def model_options(name: str) -> set[str]:
    """Option names `name` accepts, so a recipe can be validated before anything is built."""
    return set(inspect.signature(_builder(name)).parameters) - _DATA_ARGS


def _size(value: object) -> int | None:
    """A positive integer, or None. Sizes often arrive as np.int64 or in a torch.Size, so any integer
    type counts; floats and bools do not."""
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        return None
    try:
        size = operator.index(value)
    except TypeError:  # e.g. a float tensor, which has __index__ but refuses it
        return None
    return size if size >= 1 else None


def create_model(name: str, *, num_classes: int, input_shape: tuple[int, ...], **options: Any) -> nn.Module:
    """Build `name` for data with `num_classes` labels and per-example `input_shape` ((C, H, W) or (d,)).

    The result carries `classifier_name` (qualified name of the output nn.Linear, which pruning must
    leave whole) and `input_shape` (to build an example input for tracing/export).
    """
    builder = _builder(name)
    unknown = sorted(set(options) - model_options(name))
    if unknown:
        known = ", ".join(sorted(model_options(name))) or "none"
        raise UnknownModelError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for model {name!r} (known: {known})"
        )
    classes = _size(num_classes)
    if classes is None:
        raise UnknownModelError(
            f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}"
        )
    sizes = [_size(s) for s in input_shape]
    shape = tuple(s for s in sizes if s is not None)
    if not shape or len(shape) != len(sizes):
        raise UnknownModelError(f"model {name!r}: input_shape must be positive integers, got {input_shape!r}")

    model = builder(num_classes=classes, input_shape=shape, **options)
    classifier_name = getattr(model, "classifier_name", None)
    classifier = (
        dict(model.named_modules()).get(classifier_name) if isinstance(classifier_name, str) else None
    )
    if not isinstance(classifier, nn.Linear) or classifier.out_features != classes:
        raise TypeError(f"builder for {name!r} did not name an output nn.Linear in classifier_name")
    model.classifier_name = classifier_name
    model.input_shape = shape
    return model
