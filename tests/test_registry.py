"""The method registry: each method declares its section, kind and prune schedule once; the recipe schema and
compare read those declarations."""

from __future__ import annotations

from typing import Literal

import pytest

from compressor.compare import method_kind
from compressor.config import PruneConfig
from compressor.methods import METHODS, Method, method_class, prune_schedule, register_method
from compressor.methods.sgd import SGDConfig, SGDMethod
from compressor.recipe import validate_recipe


def test_every_method_declares_a_section_named_after_it() -> None:
    assert list(METHODS) == ["sgd", "avb", "emmcmc", "magnitude", "gmp", "l1_filter", "slimming", "snip",
                             "random", "depgraph"]
    for name, cls in METHODS.items():
        assert cls.name == name and cls.config.model_fields["name"].default == name


def test_registering_a_name_twice_is_an_error() -> None:
    class Again(SGDMethod):
        config = SGDConfig

    with pytest.raises(ValueError, match="'sgd' is registered twice"):
        register_method(Again)
    assert METHODS["sgd"] is SGDMethod


def test_kinds_come_from_the_declarations() -> None:
    assert {name: method_kind(name, {"name": name}) for name in METHODS} == {
        "sgd": "dense", "avb": "dense", "emmcmc": "structured", "magnitude": "unstructured",
        "gmp": "unstructured", "l1_filter": "structured", "slimming": "structured", "snip": "unstructured",
        "random": "structured", "depgraph": "structured",
    }
    assert method_kind("snip", {"name": "snip", "structured": True}) == "structured"


def test_a_new_method_reaches_the_recipe_schema_without_touching_it() -> None:
    """A registered method's section validates in a recipe; the schema is built from the registry at import,
    so this checks the declaration path the schema uses rather than re-importing it."""
    class ToyConfig(SGDConfig):
        name: Literal["toy_registry_probe"] = "toy_registry_probe"  # type: ignore[assignment]

    class Toy(SGDMethod):
        config = ToyConfig
        kind = "structured"

    try:
        register_method(Toy)
        assert method_class("toy_registry_probe") is Toy
        assert method_kind("toy_registry_probe", {"name": "toy_registry_probe"}) == "structured"
    finally:
        METHODS.pop("toy_registry_probe", None)


@pytest.mark.parametrize(("epochs", "start", "target"), [(15, 0, 9), (10, 1, 6), (2, 1, 2), (1, 1, 1), (3, 0, 2)])
def test_default_prune_schedule(epochs: int, start: int, target: int) -> None:
    """One rule for every method: 60 % of the run, at least one epoch after the schedule's start."""
    assert prune_schedule(PruneConfig(), epochs, start).target_epoch == target
    assert prune_schedule(PruneConfig(target_epoch=4), epochs, start).target_epoch == 4
    assert prune_schedule(PruneConfig(start_epoch=3), epochs, start).start_epoch == 3


def test_emmcmc_schedule_starts_after_warmup_and_dense_methods_refuse_a_target() -> None:
    recipe = validate_recipe({"model": {"name": "mlp"}, "data": {"name": "digits"},
                              "method": {"name": "emmcmc", "warmup_epochs": 2}, "train": {"epochs": 10}})
    schedule = method_class("emmcmc").schedule(recipe.method, recipe.prune, recipe.train.epochs)
    assert (schedule.start_epoch, schedule.target_epoch) == (2, 6)
    with pytest.raises(Exception, match="method 'avb' does not prune"):
        validate_recipe({"model": {"name": "mlp"}, "data": {"name": "digits"}, "method": {"name": "avb"},
                         "prune": {"target": 0.5}})
    assert issubclass(method_class("avb"), Method)
