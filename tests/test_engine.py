"""End-to-end training through the CLI on tiny digits data: run directory, summary, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.engine.trainer import run
from compressor.errors import RunDirError
from compressor.recipe import load_recipe
from compressor.storage.checkpoint import load_checkpoint, save_checkpoint

from .conftest import QUICK

runner = CliRunner()
SUMMARY_KEYS = {"method", "model", "dataset", "epochs", "accuracy", "nll", "ece", "brier", "params", "params_nonzero",
                "macs", "macs_dense", "param_sparsity", "channel_sparsity", "layers", "train_seconds",
                "train_images_per_second"}


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
    result = runner.invoke(app, ["train", str(recipe), "--no-tui", "--out", str(out), "--name", "tiny"]
                           + sets(QUICK + ["train.epochs=2"]))
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])  # the last stdout line is the run directory
    assert run_dir.parent == out and run_dir.name.startswith("tiny-")
    return run_dir


def test_run_directory_layout_and_summary(trained: Path) -> None:
    assert {p.name for p in trained.iterdir()} >= {"recipe.yaml", "metrics.jsonl", "checkpoints", "summary.json"}
    summary = json.loads((trained / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["method"] == "sgd" and summary["model"] == "resnet20" and summary["dataset"] == "digits"
    assert summary["epochs"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    assert summary["accuracy"] > 0.2  # well above chance (0.1) after two epochs on digits
    assert summary["nll"] > 0 and 0 <= summary["ece"] <= 1 and 0 <= summary["brier"] <= 2
    assert summary["params"] > 200_000 and summary["macs"] == summary["macs_dense"] > 1e6
    assert summary["channel_sparsity"] == 0.0 and all(r["kept"] == r["total"] for r in summary["layers"])
    assert summary["train_images_per_second"] > 0
    resolved = load_recipe(trained / "recipe.yaml")
    assert resolved.train.epochs == 2 and resolved.data.limit == 160


def test_metrics_jsonl_events(trained: Path) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert {"accuracy", "nll", "ece", "brier", "reliability"} <= epochs[-1]["eval"].keys()
    assert len(epochs[-1]["eval"]["reliability"]) == 15


def test_checkpoint_loads_with_weights_only_and_detects_corruption(trained: Path, tmp_path: Path) -> None:
    path = trained / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)  # plain tensors and dicts only: nothing executes
    assert raw["format"] == 1 and len(raw["sha256"]) == 64
    payload = load_checkpoint(path)
    assert payload["epoch"] == 2 and "conv1.weight" in payload["model"] or len(payload["model"]) > 10
    (trained / "checkpoints" / "previous.pt").exists()
    bad = tmp_path / "last.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(RunDirError):
        load_checkpoint(bad)
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RunDirError, match="truncated"):
        load_checkpoint(bad)


def test_atomic_save_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"x": torch.ones(2)}, path)
    save_checkpoint({"x": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.zeros(2))
    assert torch.equal(load_checkpoint(path.with_name("previous.pt"))["x"], torch.ones(2))
    assert not list(path.parent.glob(".*.tmp"))


def test_eval_command_reproduces_final_accuracy(trained: Path) -> None:
    result = runner.invoke(app, ["eval", str(trained)])
    assert result.exit_code == 0, result.output
    summary = json.loads((trained / "summary.json").read_text())
    assert f"{100 * summary['accuracy']:.2f} %" in result.output


def test_run_dirs_are_never_reused(tmp_path: Path, quickstart: Path) -> None:
    recipe = load_recipe(quickstart, QUICK + ["data.limit=64", "train.log_every=1"])
    a = run(recipe, out_dir=tmp_path)
    b = run(recipe, out_dir=tmp_path)
    assert a != b and (a / "summary.json").exists() and (b / "summary.json").exists()


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path, quickstart: Path) -> None:
    recipe = load_recipe(quickstart, QUICK + ["train.epochs=2", "data.limit=128", "data.val_limit=64"])
    full = run(recipe, out_dir=tmp_path / "full")
    calls = {"n": 0}

    def stop_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 3  # mid-way through the first epoch

    part = run(recipe, should_stop=stop_after_3, out_dir=tmp_path / "part")
    assert load_checkpoint(part / "checkpoints" / "last.pt")["step_in_epoch"] == 3
    resumed = run(None, resume=part)
    assert resumed == part
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["accuracy"] == sb["accuracy"] and sa["nll"] == sb["nll"]


def test_missing_data_and_unwritable_output_fail_cleanly(tmp_path: Path, quickstart: Path) -> None:
    result = runner.invoke(app, ["train", str(quickstart), "--no-tui", "--set", "data.name=cifar10",
                                 "--set", f"data.root={tmp_path}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(tmp_path) in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["train", str(quickstart), "--no-tui", "--out", str(blocker / "sub")] + sets(QUICK))
    assert result.exit_code == 3 and "cannot create" in result.output


def test_resume_without_checkpoint_is_refused(tmp_path: Path, quickstart: Path) -> None:
    result = runner.invoke(app, ["train", str(quickstart), "--no-tui", "--resume", str(tmp_path)])
    assert result.exit_code == 3 and "no checkpoint to resume" in result.output
