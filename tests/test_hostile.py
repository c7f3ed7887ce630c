"""Hostile input through the CLI: mutated recipes and broken data files end in exit 2 and one line per problem.

The recipe mutations are generated (hypothesis) from a valid recipe and are all invalid by construction; the
engine is replaced by a tripwire so a mutation that slipped through would fail the test instead of training.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import string
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from compressor.engine import trainer
from compressor.methods.emmcmc import EMMCMCConfig
from compressor.recipe import Recipe, load_recipe

from .conftest import write_cifar10

runner = CliRunner()
BASE: dict[str, Any] = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "limit": 64},
    "method": {"name": "emmcmc", "lr": 0.05, "beta1": 0.9, "temperature": "1/N"},
    "prune": {"target": 0.5},
    "train": {"epochs": 2, "batch_size": 32, "seed": 0, "amp": False},
    "eval": {"batch_size": 64},
}
STRINGS = [("model", "name"), ("data", "name"), ("method", "name")]
INTS = [("data", "limit"), ("train", "epochs"), ("train", "batch_size"), ("train", "seed"), ("eval", "batch_size")]
FLOATS = [("method", "lr"), ("method", "beta1"), ("prune", "target")]
BOOLS = [("train", "amp")]
# Out-of-range or non-finite for the key; 10**30 and 1e300 are fine for some keys, so they are listed per key.
HUGE: dict[tuple[str, str], list[Any]] = {
    ("method", "lr"): [float("inf"), float("nan"), -1e300, -(10**30)],
    ("method", "beta1"): [1e300, -1e300, float("-inf"), float("nan"), 10**30],
    ("prune", "target"): [10**30, 1e300, float("inf"), float("nan")],
    ("train", "seed"): [10**30, 2**63, -(10**30)],
    ("train", "epochs"): [-(10**30), float("inf")],
    ("data", "limit"): [-(10**30), float("inf")],
    ("eval", "batch_size"): [-(10**300)],
}
SECTIONS = ["model", "data", "method", "train", "prune", "eval"]
LONG_INT = "9" * 5000  # longer than Python converts from text
CUT_BEFORE = yaml.safe_dump(BASE, sort_keys=False).index("emmcmc") + 3  # inside the method's name


class Mutation(NamedTuple):
    content: bytes
    expect: str  # what the one-line message must name


def _recipe_with(path: tuple[str, ...], value: Any = None, delete: bool = False) -> dict[str, Any]:
    recipe = copy.deepcopy(BASE)
    node = recipe
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return recipe


def _yaml(recipe: dict[str, Any]) -> bytes:
    return yaml.safe_dump(recipe, sort_keys=False).encode()


junk = st.one_of(
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "x"]), st.integers(), max_size=2),
    st.text(string.ascii_letters + " -_", max_size=8).map(lambda t: "not-" + t),
)


@st.composite
def wrong_type(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from(["string", "number", "bool", "section"]))
    if kind == "string":
        path = draw(st.sampled_from(STRINGS))
        value = draw(st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.just("k"), st.integers())))
    elif kind == "number":
        path = draw(st.sampled_from(INTS + FLOATS))
        value = draw(st.one_of(junk, st.booleans(), st.just(2.5) if path in INTS else junk))
    elif kind == "bool":
        path = draw(st.sampled_from(BOOLS))
        value = draw(junk)
    else:
        path = (draw(st.sampled_from(SECTIONS)),)
        value = draw(st.one_of(st.lists(st.integers(), min_size=1, max_size=2), st.integers(), st.just("text")))
    return Mutation(_yaml(_recipe_with(path, value)), ".".join(path))


@st.composite
def unknown_key(draw: st.DrawFn) -> Mutation:
    section = draw(st.sampled_from([*SECTIONS, None]))
    model = {None: Recipe, "method": EMMCMCConfig}.get(section) or Recipe.model_fields[section].annotation
    known = set(model.model_fields)
    key = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
        lambda k: k not in known and yaml.safe_load(k) == k))  # `on`, `null`... are not string keys in YAML
    recipe = copy.deepcopy(BASE)
    (recipe if section is None else recipe[section])[key] = 1
    return Mutation(_yaml(recipe), f"{key}: unknown key" if section is None else f"{section}.{key}: unknown key")


@st.composite
def missing(draw: st.DrawFn) -> Mutation:
    path = draw(st.sampled_from([("model",), ("data",), ("method",), *STRINGS]))
    return Mutation(_yaml(_recipe_with(path, delete=True)), f"{'.'.join(path)}: required key is missing")


@st.composite
def huge(draw: st.DrawFn) -> Mutation:
    path = draw(st.sampled_from(sorted(HUGE)))
    if draw(st.booleans()):
        text = _yaml(_recipe_with(path, "LONG")).decode().replace("LONG", LONG_INT)
        return Mutation(text.encode(), "YAML value error")
    return Mutation(_yaml(_recipe_with(path, draw(st.sampled_from(HUGE[path])))), ".".join(path))


@st.composite
def garbage(draw: st.DrawFn) -> Mutation:
    content = draw(st.one_of(
        st.binary(min_size=1, max_size=200),
        st.text(max_size=200).map(str.encode),
        st.sampled_from(["[" * 5000, "model: {name: resnet20", "- a\n- b", "a: &x [*x]", "\t- tab"]).map(str.encode),
        st.integers(1, CUT_BEFORE).map(lambda n: _yaml(BASE)[:n]),  # cut short, at the latest mid-method
    ))
    return Mutation(content, "")  # no key to name: the message names the file


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "mutated.yaml"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=st.one_of(wrong_type(), unknown_key(), missing(), huge(), garbage()))
def test_mutated_recipes_exit_2_naming_the_key(recipe_file: Path, mutation: Mutation) -> None:
    recipe_file.write_bytes(mutation.content)

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a mutated recipe started training")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "run", tripwire)
        result = runner.invoke(app, ["train", str(recipe_file), "--no-tui", "--out", str(recipe_file.parent)])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output and output.strip()
    assert all(line.startswith("error: ") for line in output.strip().splitlines()), output
    assert str(recipe_file) in output
    assert mutation.expect in output, output


def test_the_unmutated_recipe_is_valid(recipe_file: Path) -> None:
    """The mutations start from a recipe that passes, so each failure above is the mutation's doing."""
    recipe_file.write_bytes(_yaml(BASE))
    assert load_recipe(recipe_file).method.name == "emmcmc"


# ---------------------------------------------------------------- data files through the CLI


def train_on(tmp_path: Path, data: dict[str, Any], model: dict[str, Any] | None = None) -> tuple[int, str, Path]:
    recipe = {"model": model or {"name": "mlp", "hidden": [8]}, "data": data,
              "method": {"name": "sgd", "lr": 0.05}, "train": {"epochs": 1, "batch_size": 32}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(path), "--no-tui", "--out", str(out)])
    return result.exit_code, result.output, out


def assert_refused_before_training(code: int, output: str, out: Path, *expected: str) -> None:
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    for text in expected:
        assert text in lines[0], output
    assert not out.exists() or not any(out.iterdir())  # no run directory left behind


X = np.random.default_rng(0).normal(size=(40, 3))
Y = np.arange(40) % 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": X, "labels": Y}, "missing ['X', 'y'], unexpected ['features', 'labels']"),
        ({"X": X, "y": Y[:30]}, "'y' must have shape (40,)"),
        ({"X": X[:, :, None], "y": Y}, "'X' must have shape (n, d)"),
        ({"X": X, "y": Y, "X_test": X[:4], "y_test": np.array([0, 1, 7, 0])}, "'y_test' has label 7"),
        ({"X": X, "y": np.where(Y == 0, -3, 1)}, "negative label -3"),
        ({"X": np.zeros((0, 3)), "y": np.zeros(0, dtype=int)}, "with n, d > 0"),
        ({"X": X.astype(str), "y": Y}, "must hold real numbers"),
    ],
    ids=["names", "lengths", "shape", "label-out-of-range", "negative-label", "empty", "dtype"],
)
def test_bad_npz_is_refused_in_one_line(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "table.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    code, output, out = train_on(tmp_path, {"name": "npz", "root": str(path)})
    assert_refused_before_training(code, output, out, str(path), message)


def test_npz_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "table.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    code, output, out = train_on(tmp_path, {"name": "npz", "root": str(path)})
    assert_refused_before_training(code, output, out, str(path), "not a readable .npz file")


def _images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def test_a_few_corrupt_images_are_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _images(root / "cat", 60, seed=0)
    _images(root / "dog", 60, seed=1)
    (root / "dog" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, output, out = train_on(tmp_path, {"name": "imagefolder", "root": str(root), "image_size": 4})
    assert code == 0, output
    assert "[warning] skipped 1 unreadable image(s) of 121" in output and "zz_broken.png" in output
    (run_dir,) = out.iterdir()
    assert "zz_broken.png" in (run_dir / "metrics.jsonl").read_text()


def test_many_corrupt_images_or_none_at_all_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _images(root / "cat", 30, seed=0)
    _images(root / "dog", 30, seed=1)
    for i in range(3):
        (root / "dog" / f"zz_{i}.png").write_bytes(b"not an image")
    code, output, out = train_on(tmp_path, {"name": "imagefolder", "root": str(root), "image_size": 4})
    assert_refused_before_training(code, output, out, "3 of 63 images", "unreadable")
    shutil.rmtree(root / "dog")
    (root / "dog").mkdir()
    code, output, out = train_on(tmp_path, {"name": "imagefolder", "root": str(root), "image_size": 4})
    assert_refused_before_training(code, output, out, "no images", "dog")


def test_corrupt_cifar_batch_is_refused(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "cifar", n_train=50, n_test=20)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    with open(batch, "rb") as fh:
        content = pickle.load(fh)
    content[b"labels"][3] = 12
    batch.write_bytes(pickle.dumps(content))
    code, output, out = train_on(tmp_path, {"name": "cifar10", "root": str(root)}, {"name": "resnet20"})
    assert_refused_before_training(code, output, out, "data_batch_2", "outside 0..9")
    batch.write_bytes(b"\x80\x04 garbage")
    code, output, out = train_on(tmp_path, {"name": "cifar10", "root": str(root)}, {"name": "resnet20"})
    assert_refused_before_training(code, output, out, "data_batch_2")
