"""What a compare trains: its options, each method's section and the recipe of every (method, seed) run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compressor.config import PruneConfig, Section, TrainConfig
from compressor.errors import RecipeError
from compressor.methods import METHODS, Kind, method_class, prune_schedule
from compressor.recipe import Recipe, apply_overrides, parse_override, validate_recipe

# The default methods: every registered one, in registration order (derived from the registry, not a list).
DEFAULT_METHODS: tuple[str, ...] = tuple(METHODS)
# (method, seed index) -> the run's validated recipe and the method's kind, seed-major.
Plans = dict[tuple[str, int], tuple[Recipe, str]]


@dataclass
class CompareOptions:
    """What `compressor compare` was asked for; stored as compare.json so `--resume` can repeat it."""

    recipe: Path
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    target: float = 0.5
    overrides: list[str] = field(default_factory=list)
    method_overrides: list[str] = field(default_factory=list)  # "NAME:KEY=VALUE"
    seeds: int = 1
    device: str | None = None
    export: bool = True
    latency_budget_s: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "recipe": str(Path(self.recipe).resolve())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareOptions:
        return cls(**{**data, "recipe": Path(data["recipe"])})


def method_configs() -> dict[str, type[Section]]:
    """Method name -> its recipe section class, from the method registry."""
    return {name: cls.config for name, cls in METHODS.items()}


def method_kind(name: str, section: dict[str, Any]) -> Kind:
    """ "dense", "structured" (target on MACs) or "unstructured" (target on weights), as the method declares."""
    cls = method_class(name)
    return cls.kind_of(cls.config.model_validate(section))


def _shared_fields(cls: type[Section], source: type[Section]) -> set[str]:
    """Fields of the most derived config class both inherit from (none when that is only `Section`)."""
    for base in cls.__mro__:
        if base is Section or not (isinstance(base, type) and issubclass(base, Section)):
            continue
        if issubclass(source, base):
            return set(base.model_fields)
    return set()


def _parse_method_sets(texts: Sequence[str], configs: dict[str, type[Section]]) -> list[tuple[str, str]]:
    parsed = []
    for text in texts:
        owner, sep, rest = text.partition(":")
        if not sep or owner not in configs:
            raise RecipeError(
                f"--method-set {text}: expected NAME:KEY=VALUE with NAME one of {', '.join(configs)}"
            )
        key = parse_override(rest)[0][0]
        if key not in configs[owner].model_fields or key == "name":
            raise RecipeError(f"--method-set {text}: '{key}' is not a setting of method '{owner}'")
        parsed.append((owner, rest))
    return parsed


def method_section(
    name: str, recipe_section: dict[str, Any], method_sets: Sequence[str]
) -> tuple[dict, dict]:
    """The method section `name` trains with, and where each overridden key came from (for error messages)."""
    configs = method_configs()
    cls = configs[name]
    section: dict[str, Any] = {"name": name}
    source = configs.get(recipe_section.get("name", ""))
    if source is not None:
        shared = _shared_fields(cls, source)
        section.update({k: v for k, v in recipe_section.items() if k in shared and k != "name"})
    parsed = _parse_method_sets(method_sets, configs)
    inherited = [(owner, rest) for owner, rest in parsed if owner != name and issubclass(cls, configs[owner])]
    origin: dict[tuple[str, ...], str] = {}
    for owner, rest in inherited + [(owner, rest) for owner, rest in parsed if owner == name]:
        section, keys = apply_overrides(section, [rest])
        origin.update({("method",) + key: f"--method-set {owner}:{rest}" for key in keys})
    return section, origin


def _default_target_epoch(data: dict[str, Any]) -> int:
    """The one epoch split every method shares: the one-shot schemes' default prune epoch."""
    epochs = int((data.get("train") or {}).get("epochs", TrainConfig.model_fields["epochs"].default))
    return prune_schedule(PruneConfig(), epochs, default_start=0).target_epoch


def _read_raw_recipe(path: Path) -> dict[str, Any]:
    """The recipe file as a mapping, before overrides (RecipeError when missing, not YAML or not a mapping)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: YAML syntax error: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}:1: the recipe must be a mapping with sections model, data, method, train")
    return raw


def _prune_section(opts: CompareOptions, data: dict[str, Any], kind: str) -> dict[str, Any]:
    """The recipe's prune section with the shared epoch split and compare's target for this kind of method."""
    prune = dict(data.get("prune") or {})
    prune.setdefault("target_epoch", None)
    if prune["target_epoch"] is None:
        prune["target_epoch"] = _default_target_epoch(data)
    prune["target"] = None if kind == "dense" else opts.target
    if kind != "dense":
        prune["target_kind"] = "macs" if kind == "structured" else "params"
    return prune


def method_recipe(opts: CompareOptions, name: str, seed_index: int) -> tuple[Recipe, str]:
    """The validated recipe of one (method, seed) run and the method's kind."""
    path = Path(opts.recipe)
    data, origin = apply_overrides(_read_raw_recipe(path), opts.overrides)
    section, method_origin = method_section(name, data.get("method") or {}, opts.method_overrides)
    kind = method_kind(name, section)
    train = dict(data.get("train") or {})
    train["seed"] = int(train.get("seed", 0)) + seed_index
    prune = _prune_section(opts, data, kind)
    data = {**data, "name": f"{name}-s{train['seed']}", "method": section, "train": train, "prune": prune}
    recipe = validate_recipe(data, where=f"{path} (method {name})", origin={**origin, **method_origin})
    return recipe, kind


def check_options(opts: CompareOptions) -> None:
    """RecipeError for an unknown, missing or repeated method or a target outside (0, 1)."""
    configs = method_configs()
    unknown = [m for m in opts.methods if m not in configs]
    if unknown or not opts.methods:
        raise RecipeError(
            f"--methods: unknown method(s) {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(configs)})"
        )
    if len(set(opts.methods)) != len(opts.methods):
        raise RecipeError("--methods: a method is listed twice")
    if not 0.0 < opts.target < 1.0:
        raise RecipeError(f"--target {opts.target}: expected a fraction strictly between 0 and 1")


def plan_runs(opts: CompareOptions) -> Plans:
    """Every (method, seed) run's recipe and kind, seed-major so a partial compare covers every method once
    before any twice; checks the options first, and derives every recipe before anything is trained."""
    check_options(opts)
    return {(name, s): method_recipe(opts, name, s) for s in range(opts.seeds) for name in opts.methods}
