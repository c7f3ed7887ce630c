"""Recipe errors as a user reads them at the command line: "did you mean" for a mistyped key, method, model,
dataset or recipe file; one line for a value that fits no member of a union (instead of one per member with
pydantic's internal names); and `--set method.name=NAME` switching method by dropping what it does not take.

The loader (`compressor.recipe`) reports every problem as "<where>: <dotted.key>: <reason>"; these helpers only
add to or merge such lines, so every command that validates a recipe gets the same wording.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

_UNKNOWN_KEY = re.compile(r"^(?P<head>.*?)(?P<key>[A-Za-z_][\w.]*): unknown key$")
_UNKNOWN_NAME = re.compile(r"unknown (?P<what>method|model|dataset) '(?P<name>[^']*)' \(known: (?P<known>[^)]*)\)")
_NOT_FOUND = re.compile(r"^(?P<path>.+): recipe file not found$")
_NO_ROOT = re.compile(r"data\.root: path does not exist: ")
# A union member's error: pydantic appends the member's tag to the key ("method.temperature.float").
_MEMBER = re.compile(r"^(?P<head>.*?)(?P<key>[A-Za-z_][\w.]*?)\.(?P<tag>float|int|str|bool|none|"
                     r"literal\[.*?\]|list\[[^\]]*\]|dict\[[^\]]*\]|constrained-\w+): (?P<msg>.*)$")
_ROOT_HINTS = {
    "cifar10": "pass --set data.root=DIR holding cifar-10-batches-py/, or --set data.download=true to download it "
               "there where there is network",
    "cifar100": "pass --set data.root=DIR holding cifar-100-python/, or --set data.download=true to download it "
                "there where there is network",
    "npz": "pass your file: --set data.root=FILE.npz (arrays X, y, optionally X_test, y_test)",
    "imagefolder": "pass your folder: --set data.root=DIR (DIR/<class>/*, or DIR/train/<class>/* and "
                   "DIR/val/<class>/*)",
}
_MEMBER_WORDS = {"float": "a number", "int": "an integer", "str": "text", "bool": "true or false", "none": "null"}


def suggest(word: str, candidates: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """The candidate the user most likely meant: one they typed the start of (the shortest), else the
    closest spelling."""
    started = sorted((c for c in candidates if c.startswith(word) and c != word), key=lambda c: (len(c), c))
    if word and started:
        return started[0]
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def section_keys(path: list[str]) -> set[str]:
    """The keys a recipe accepts under `path` (the method section: any registered method's)."""
    from pydantic import BaseModel

    from compressor.methods import METHODS
    from compressor.recipe import Recipe

    if not path:
        return set(Recipe.model_fields)
    if path == ["method"]:
        return {key for cls in METHODS.values() for key in cls.config.model_fields}
    field = Recipe.model_fields.get(path[0]) if len(path) == 1 else None
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return set(annotation.model_fields)
    return set()


def recipe_file_hint(path: str) -> str | None:
    """A YAML file beside `path` (or among the bundled recipes) whose name is close to it."""
    from compressor.cli.common import RECIPES_DIR

    wanted = Path(path)
    for folder in (wanted.parent, RECIPES_DIR):
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml")]
        close = suggest(wanted.name, names)
        if close is not None:
            return str(folder / close) if folder != wanted.parent else str(wanted.parent / close)
    return None


def _member_alternatives(tag: str, msg: str) -> list[str]:
    if tag.startswith("literal["):
        return re.findall(r"'[^']*'", msg) or [tag]
    return [_MEMBER_WORDS.get(tag, msg[0].lower() + msg[1:] if msg else tag)]


def merge_union_members(problems: list[str]) -> list[str]:
    """Lines that are one union's members failing for the same key become one line listing what fits."""
    out: list[str] = []
    merged: dict[tuple[str, str], int] = {}
    alternatives: dict[int, list[str]] = {}
    for line in problems:
        match = _MEMBER.match(line)
        if match is None:
            out.append(line)
            continue
        key = (match["head"], match["key"])
        if key not in merged:
            merged[key] = len(out)
            out.append("")
            alternatives[merged[key]] = []
        alternatives[merged[key]].extend(_member_alternatives(match["tag"], match["msg"]))
    for (head, key), index in merged.items():
        options = alternatives[index]
        expected = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
        out[index] = f"{head}{key}: expected {expected}"
    return out


def explain(line: str, dataset: str | None = None) -> str:
    """One problem line with what the user most likely meant."""
    if match := _UNKNOWN_KEY.match(line):
        *parent, name = match["key"].split(".")
        close = suggest(name, section_keys(parent))
        if close is not None:
            return f"{line} (did you mean {'.'.join([*parent, close])}?)"
    if match := _UNKNOWN_NAME.search(line):
        close = suggest(match["name"], [k.strip() for k in match["known"].split(",")])
        if close is not None:
            return line.replace(match[0], f"unknown {match['what']} '{match['name']}', did you mean '{close}'? "
                                          f"(known: {match['known']})")
    if match := _NOT_FOUND.match(line):
        close = recipe_file_hint(match["path"])
        if close is not None:
            return f"{line} (did you mean {close}?)"
    if _NO_ROOT.search(line):
        return f"{line} ({_ROOT_HINTS.get(dataset or '', 'pass --set data.root=PATH')})"
    return line


def explain_all(problems: list[str], dataset: str | None = None) -> list[str]:
    return [explain(line, dataset) for line in merge_union_members(problems)]


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def dataset_of(recipe: Path, overrides: list[str]) -> str | None:
    """The recipe's data.name after the overrides, when it can be read at all (for hints only)."""
    from compressor.errors import RecipeError
    from compressor.recipe import apply_overrides

    data = _read_yaml(recipe)
    if data is None:
        return None
    try:
        data, _ = apply_overrides(data, overrides)
    except RecipeError:
        return None
    section = data.get("data")
    return section.get("name") if isinstance(section, dict) else None


def _fit(cls: Any, section: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
    """(the section without the values `cls`'s config rejects, those keys, the method's kind)."""
    from pydantic import ValidationError

    try:
        return section, [], str(cls.kind_of(cls.config.model_validate(section)))
    except ValidationError as err:
        bad = {str(e["loc"][0]) for e in err.errors() if e["loc"] and e["loc"][0] != "name"}
    section = {key: value for key, value in section.items() if key not in bad}
    try:
        return section, sorted(bad), str(cls.kind_of(cls.config.model_validate(section)))
    except ValidationError:
        return section, sorted(bad), None


def switch_method(recipe: Path, overrides: list[str], note: Callable[[str], None]) -> list[str]:
    """`--set method.name=NAME` naming another registered method than the recipe's: the method section keeps
    the keys NAME also takes, drops the others, and `prune.target` goes too when NAME does not prune; `note`
    is told in one line what was dropped. Other overrides are returned unchanged, in order."""
    from compressor.methods import METHODS
    from compressor.recipe import parse_override

    wanted = None
    for text in overrides:
        if text.split("=", 1)[0].strip() == "method.name":
            wanted = parse_override(text)[1]
    data = _read_yaml(recipe)
    section = data.get("method") if data is not None else None
    if not isinstance(wanted, str) or wanted not in METHODS or not isinstance(section, dict):
        return overrides
    if section.get("name") == wanted or section.get("name") not in METHODS:
        return overrides
    cls = METHODS[wanted]
    accepted = set(cls.config.model_fields)
    kept, invalid, kind = _fit(cls, {**{k: v for k, v in section.items() if k in accepted}, "name": wanted})
    dropped = [f"method.{key}" for key in section if key not in accepted or key in invalid]
    extra: list[str] = []
    prune = data.get("prune") if isinstance(data.get("prune"), dict) else {}
    if prune.get("target") is not None and kind == "dense":
        extra = ["prune.target=null"]
    parts = [f"{', '.join(dropped)} ({wanted} does not take them, or not with these values)"] if dropped else []
    parts += [f"prune.target ({wanted} does not prune)"] if extra else []
    if parts:
        note(f"note: method {section.get('name')} -> {wanted}: dropped {' and '.join(parts)}")
    return [f"method={yaml.safe_dump(kept, default_flow_style=True).strip()}", *extra, *overrides]
