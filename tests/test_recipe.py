"""Recipe validation: good recipes load, every kind of bad recipe gives exit 2 and file:line key: reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import RecipeError
from compressor.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

GOOD = """\
model:
  name: resnet20
data:
  name: digits
method:
  name: sgd
  lr: 0.05
train:
  epochs: 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_good_recipe_defaults_and_overrides(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, GOOD), ["train.batch_size=16", "method.nesterov=false", "data.limit=100"])
    assert r.method.name == "sgd" and r.method.lr == 0.05 and r.method.nesterov is False
    assert r.train.batch_size == 16 and r.train.epochs == 2 and r.data.limit == 100
    assert r.name == "r"  # defaults to the file's stem
    r2 = load_recipe(write(tmp_path, GOOD), ["method.name=emmcmc", "prune.target=0.5", "method.temperature=1/sqrt(N)"])
    assert r2.method.name == "emmcmc" and r2.prune.target == 0.5 and r2.method.temperature == "1/sqrt(N)"


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("model: [\n  name: x\n", [], "r.yaml:3: YAML syntax error"),
        (GOOD + "  epochz: 3\n", [], "r.yaml:10: train.epochz: unknown key"),
        (GOOD.replace("epochs: 2", "epochs: two"), [], "r.yaml:9: train.epochs: Input should be a valid integer"),
        (GOOD.replace("epochs: 2", "epochs: -1"), [], "r.yaml:9: train.epochs: Input should be greater than 0"),
        (GOOD.replace("resnet20", "resnet21"), [], "r.yaml:2: model.name: unknown model 'resnet21'"),
        (GOOD.replace("digits", "mnist"), [], "r.yaml:4: data.name: unknown dataset 'mnist'"),
        (GOOD.replace("sgd", "adamw"), [], "r.yaml:6: method.name: unknown method 'adamw' (known: sgd, avb, emmcmc, "),
        (GOOD.replace("digits", "cifar10\n  root: /nonexistent/cifar"), [], "data.root: path does not exist"),
        (GOOD.replace("model:\n  name: resnet20\n", ""), [], "model: required key is missing"),
        (GOOD, ["train.epochs=abc"], "--set train.epochs=abc: train.epochs: Input should be a valid integer"),
        (GOOD, ["nosuch.key=1"], "--set nosuch.key=1: nosuch: unknown key"),
        ("[1, 2]\n", [], "r.yaml:1: the recipe must be a mapping"),
        (GOOD + "prune:\n  target: 1.5\n", [], "r.yaml:11: prune.target: Input should be less than 1"),
    ],
)
def test_bad_recipes_name_line_key_reason(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    assert any(expected in p for p in info.value.problems), info.value.problems
    args = ["train", str(path), "--no-tui"] + [a for o in overrides for a in ("--set", o)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert expected in result.output
    assert all(line.startswith("error: ") for line in result.output.strip().splitlines())


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("epochs: 2", "epochs: 0\n  batch_size: big").replace("lr: 0.05", "lr: -1")
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    keys = " ".join(info.value.problems)
    assert "train.epochs" in keys and "train.batch_size" in keys and "method.lr" in keys


def test_binary_garbage_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x00\xff\xfe\x01 garbage")
    result = runner.invoke(app, ["train", str(path), "--no-tui"])
    assert result.exit_code == 2 and "bin.yaml" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "missing.yaml"), "--no-tui"])
    assert result.exit_code == 2 and "recipe file not found" in result.output


def test_every_shipped_recipe_validates(tmp_path: Path) -> None:
    npz = tmp_path / "t.npz"
    npz.write_bytes(b"")
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert len(recipes) >= 8
    for path in recipes:
        root = str(npz) if "tabular" in path.name or "variable" in path.name else str(tmp_path)
        recipe = load_recipe(path, [f"data.root={root}"])
        assert recipe.train.epochs > 0


def test_recipes_command_lists_bundled_recipes() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    assert "recipes/quickstart.yaml" in result.output and "recipes/resnet_cifar100.yaml" in result.output
