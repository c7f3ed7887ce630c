"""Recipe schema (pydantic v2, extra="forbid") and the YAML loader with file:line error messages.

A recipe is validated data: every problem is reported at once, each as one line naming the file, the
line, the dotted key and the reason, so a user fixes a recipe in one pass instead of one crash per key.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError

from compressor.config import DataConfig, EvalConfig, ModelConfig, PruneConfig, Section, TrainConfig
from compressor.errors import RecipeError
from compressor.methods import METHODS, method_class

# The `method:` section: one config class per registered method, told apart by its `name`.
MethodConfig = Annotated[Union[tuple(cls.config for cls in METHODS.values())], Field(discriminator="name")]  # noqa: UP007


class Recipe(Section):
    name: str | None = Field(None, description="run name (default: the recipe file's stem)")
    model: ModelConfig
    data: DataConfig
    method: MethodConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------- loading


def _line_index(node: yaml.Node, path: tuple[str, ...] = (), out: dict | None = None) -> dict:
    """Map dotted key paths to 1-based YAML line numbers, so errors can point at the line.

    Stops 16 levels down: recipes are shallow, and a YAML alias can make the node graph a cycle (`a: &x [*x]`).
    """
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if len(path) >= 16:
        return out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            out[sub] = key.start_mark.line + 1
            _line_index(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (str(i),), out)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], YAML-typed value)."""
    if "=" not in text:
        raise RecipeError(f"--set {text}: expected KEY=VALUE (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> tuple[dict, dict[tuple[str, ...], str]]:
    data = copy.deepcopy(data)
    origin: dict[tuple[str, ...], str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise RecipeError(f"--set {text}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = value
        origin[tuple(parts)] = f"--set {text}"
    return data, origin


def _format_errors(err: ValidationError, where: str, lines: dict, origin: dict) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        # pydantic puts the union tag in the path (method.emmcmc.beta1): drop it for the user's dotted key
        if len(loc) > 1 and loc[0] == "method" and loc[1] in METHODS:
            loc = (loc[0],) + loc[2:]
        key = ".".join(loc) or "(top level)"
        src = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), None)
        src = src or next((v for k, v in origin.items() if k[: len(loc)] == loc), None)
        if src is None:
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
            src = f"{where}:{line}" if line else where
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "union_tag_invalid":
            loc = loc + ("name",)
            key = ".".join(loc)
            src = origin.get(loc) or (f"{where}:{lines[loc]}" if loc in lines else src)
            ctx = e.get("ctx", {})
            msg = f"unknown method '{ctx.get('tag')}' (known: {ctx.get('expected_tags', '').replace(chr(39), '')})"
        elif e["type"] == "union_tag_not_found":
            key = ".".join(loc + ("name",))
            msg = "required key is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{src}: {key}: {msg}")
    return problems


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; raise RecipeError with one line per problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{where}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{where}: cannot read recipe ({exc.__class__.__name__}: {exc})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{where}{line}: YAML syntax error: {reason}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts (4300 digits)
        raise RecipeError(f"{where}: YAML value error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{where}: YAML nesting is too deep to be a recipe") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}:1: the recipe must be a mapping with sections model, data, method, train")
    lines = _line_index(node) if node is not None else {}
    data, origin = apply_overrides(data, overrides or [])
    return validate_recipe(data, where=where, lines=lines, origin=origin, default_name=path.stem)


def stored_recipe(data: dict) -> dict:
    """A recipe read back from a run (recipe.yaml, a checkpoint, an exported model file): one written before
    `data.split_seed` existed drew its split from `train.seed`, so that is its split seed."""
    data = copy.deepcopy(data)
    section = data.get("data")
    if isinstance(section, dict) and "split_seed" not in section:
        section["split_seed"] = int((data.get("train") or {}).get("seed", 0))
    return data


def validate_recipe(
    data: dict,
    *,
    where: str = "<recipe>",
    lines: dict | None = None,
    origin: dict | None = None,
    default_name: str | None = None,
) -> Recipe:
    lines, origin = lines or {}, origin or {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, where, lines, origin)) from None
    at = _locator(where, lines, origin)
    problems = _check_names(recipe, at) + _check_schedule(recipe, at)
    if problems:
        raise RecipeError(problems)
    if recipe.name is None and default_name:
        recipe.name = default_name
    return recipe


def _locator(where: str, lines: dict, origin: dict) -> Callable[..., str]:
    """key path -> where the user wrote it: the `--set` that set it, or the recipe file and line."""
    def at(*key: str) -> str:
        if key in origin:
            return origin[key]
        line = next((lines[key[:i]] for i in range(len(key), -1, -1) if key[:i] in lines), None)
        return f"{where}:{line}" if line else where

    return at


def _check_schedule(recipe: Recipe, at: Callable[..., str]) -> list[str]:
    """A pruning target the run could never reach is refused here, naming the key to change, instead of
    training to the end and silently skipping it."""
    prune, epochs = recipe.prune, recipe.train.epochs
    cls = method_class(recipe.method.name)
    if prune.target is None or cls.kind_of(recipe.method) == "dense":
        return []
    schedule = cls.schedule(recipe.method, prune, epochs)
    start, target = schedule.start_epoch, schedule.target_epoch
    hint = "or a fraction of the run such as 0.6"
    if prune.target_epoch is not None and target > epochs:
        return [(f"{at('prune', 'target_epoch')}: prune.target_epoch: epoch {target} is past the run's {epochs} "
                f"epochs (train.epochs); set it to at most {epochs}, {hint}")]
    if start > target:
        key = ("prune", "start_epoch") if prune.start_epoch is not None else ("method", "warmup_epochs")
        return [(f"{at(*key)}: {'.'.join(key)}: the schedule starts at epoch {start}, after the removal at epoch "
                f"{target} (prune.target_epoch); lower {'.'.join(key)}")]
    return []


def _check_names(recipe: Recipe, at: Callable[..., str]) -> list[str]:
    """Checks that need the registries (model names and options, data paths) — still before any training."""
    from compressor.models import UnknownModelError, list_models, model_options

    problems = []
    if recipe.model.name not in list_models():
        problems.append(f"{at('model', 'name')}: model.name: unknown model '{recipe.model.name}' "
                        f"(known: {', '.join(list_models())})")
    else:
        try:
            allowed = model_options(recipe.model.name)
        except UnknownModelError as exc:
            allowed, _ = set(), problems.append(f"{at('model', 'name')}: model.name: {exc}")
        if recipe.model.hidden is not None and "hidden" not in allowed:
            problems.append(f"{at('model', 'hidden')}: model.hidden: not an option of '{recipe.model.name}'")
        for key in recipe.model.options:
            if key not in allowed:
                problems.append(f"{at('model', 'options', key)}: model.options.{key}: not an option of "
                                f"'{recipe.model.name}' (options: {', '.join(sorted(allowed)) or 'none'})")
    d = recipe.data
    if d.name in ("cifar10", "cifar100", "imagefolder", "npz"):
        if d.root is None:
            problems.append(f"{at('data', 'name')}: data.root: required for dataset '{d.name}'")
        elif not Path(d.root).expanduser().exists() and not (d.download and d.name.startswith("cifar")):
            problems.append(f"{at('data', 'root')}: data.root: path does not exist: {d.root}")
        elif d.name == "npz" and not Path(d.root).expanduser().is_file():
            problems.append(f"{at('data', 'root')}: data.root: npz data needs a .npz file, got a folder: {d.root}")
    if recipe.prune.target is not None and method_class(recipe.method.name).kind_of(recipe.method) == "dense":
        problems.append(f"{at('prune', 'target')}: prune.target: method '{recipe.method.name}' does not prune "
                        "(use emmcmc)")
    return problems


def resolved_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
