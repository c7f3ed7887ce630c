"""Command-line conventions: -h and --version, help that shows flags as users expect, "did you mean" for a
mistyped key, method, model or recipe file, one readable line for a value no union member takes, switching
method with --set method.name, and stdout reserved for the run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import RecipeError
from compressor.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def compressor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressor", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def errors(result: object) -> list[str]:
    output = result.output  # type: ignore[attr-defined]
    assert "Traceback" not in output, output
    return [line for line in output.strip().splitlines() if line.startswith("error: ")]


def test_short_help_and_version_through_the_entry_point() -> None:
    short, long = compressor("-h"), compressor("--help")
    assert short.returncode == 0 and short.stdout == long.stdout and "train" in short.stdout
    version = compressor("--version")
    assert version.returncode == 0 and version.stdout.startswith("compressor 0.")
    assert compressor("train", "-h").returncode == 0


def test_help_shows_flags_the_way_users_expect() -> None:
    text = compressor("train", "-h").stdout
    assert "--set KEY=VALUE" in text and "(repeatable)" in text
    assert "<bool>" not in text and "list[str]" not in text
    assert any(line.split() == ["--no-tui", "plain", "progress", "lines", "on", "stderr", "instead", "of", "the"]
               for line in text.splitlines())
    assert "--follow / --no-follow" in compressor("dashboard", "-h").stdout


@pytest.mark.parametrize(("args", "hint"), [
    (["--set", "train.batchsize=3"], "train.batchsize: unknown key (did you mean train.batch_size?)"),
    (["--set", "trian.epochs=3"], "trian: unknown key (did you mean train?)"),
    (["--set", "method.temprature=1/N"], "method.temprature: unknown key (did you mean method.temperature?)"),
    (["--set", "method.name=emcmc"], "unknown method 'emcmc', did you mean 'emmcmc'? (known: sgd, avb, emmcmc"),
    (["--set", "model.name=resnet2"], "unknown model 'resnet2', did you mean 'resnet20'?"),
])
def test_a_mistyped_key_method_or_model_gets_a_suggestion(args: list[str], hint: str) -> None:
    result = runner.invoke(app, ["train", str(QUICKSTART), *args, "--no-tui"])
    assert result.exit_code == 2
    (line,) = errors(result)
    assert hint in line


def test_a_mistyped_recipe_file_gets_a_suggestion() -> None:
    result = compressor("train", "recipes/quickstart.yml", "--no-tui")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: recipes/quickstart.yml: recipe file not found "
                                     "(did you mean recipes/quickstart.yaml?)")


def test_a_value_no_union_member_takes_is_one_line_without_validator_internals() -> None:
    result = runner.invoke(app, ["train", str(QUICKSTART), "--set", "method.temperature=banana", "--no-tui"])
    assert result.exit_code == 2
    assert errors(result) == [("error: --set method.temperature=banana: method.temperature: expected a number, "
                               "'1/N' or '1/sqrt(N)'")]


def test_a_missing_cifar_folder_mentions_download(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(ROOT / "recipes" / "resnet20_cifar10.yaml"), "--set",
                                 f"data.root={tmp_path / 'nowhere'}", "--no-tui"])
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "path does not exist" in line and "--set data.download=true" in line


def test_set_method_name_switches_method_in_one_line_and_stdout_is_only_the_run_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(QUICKSTART), "--set", "method.name=sgd", "--set", "train.epochs=1",
                                 "--set", "data.limit=64", "--set", "data.val_limit=32", "--no-tui",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert result.stdout == f"{run_dir}\n"  # progress and notes went to stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [("note: method emmcmc -> sgd: dropped method.beta1, method.temperature, method.lambda0, "
                      "method.schedule, method.cycles, method.samples_per_cycle, method.warmup_epochs (sgd does "
                      "not take them, or not with these values) and prune.target (sgd does not prune)")]
    assert "epoch 1/1" in result.stderr and "finished:" in result.stderr
    stored = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert stored["method"]["name"] == "sgd" and stored["method"]["lr"] == 0.2  # shared keys kept
    assert stored["method"]["nesterov"] is True and stored["method"]["schedule"] == "cosine"
    assert stored["prune"]["target"] is None


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_each_shipped_recipe_runs_as_shipped_or_says_what_to_pass(recipe: str) -> None:
    """A recipe that needs data says in its first line (what `compressor recipes` shows) and in its error
    exactly what to pass; the others validate as shipped (the quickstart's training is tested elsewhere)."""
    path = ROOT / "recipes" / recipe
    first = path.read_text().splitlines()[0]
    try:
        load_recipe(path)
    except RecipeError as exc:
        result = runner.invoke(app, ["train", str(path), "--no-tui"])
        (line,) = errors(result)
        assert result.exit_code == 2 and "data.root: path does not exist" in str(exc)
        assert "--set data.root=" in first and "--set data.root=" in line
        assert ("--set data.download=true" in first) == ("cifar" in recipe)
        assert ("--set data.download=true" in line) == ("cifar" in recipe)
        return
    assert "no download" in first
