"""`compressor eval`: the posterior average beside the checkpoint, --checkpoint, --json, and what ships (an
exported ONNX file, scored through onnxruntime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.storage.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
# emmcmc removes half the MACs after epoch 2 and keeps one posterior sample of the pruned network.
TINY = ["train.epochs=3", "data.limit=128", "data.val_limit=64", "train.batch_size=32"]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def sets(*overrides: str) -> list[str]:
    return [arg for text in overrides for arg in ("--set", text)]


def one_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *sets(*TINY), "--no-tui",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def eval_json(*args: str) -> dict:
    result = runner.invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_shows_the_posterior_average_beside_the_checkpoint(run_dir: Path) -> None:
    recorded = summary(run_dir)
    assert recorded["bma"]["samples"] == 1
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "checkpoint last" in result.stdout and "BMA of 1 sample" in result.stdout
    accuracy_row = next(line for line in result.stdout.splitlines() if "accuracy" in line)
    assert f"{100 * recorded['accuracy']:.2f} %" in accuracy_row
    assert accuracy_row.count(f"{100 * recorded['bma']['accuracy']:.2f} %") >= 1
    measured = eval_json(str(run_dir))
    assert measured["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert measured["bma"]["samples"] == 1
    assert measured["bma"]["accuracy"] == pytest.approx(recorded["bma"]["accuracy"], abs=1e-6)
    assert measured["bma"]["nll"] == pytest.approx(recorded["bma"]["nll"], abs=1e-5)
    assert eval_json(str(run_dir), "--no-bma")["bma"] is None


def test_eval_checkpoint_picks_best_or_one_posterior_sample(run_dir: Path) -> None:
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert eval_json(str(run_dir), "--checkpoint", "best")["accuracy"] == pytest.approx(best["best_accuracy"])
    sample = eval_json(str(run_dir), "--checkpoint", "sample-1")
    assert sample["checkpoint"] == "sample-1" and sample["bma"] is None
    assert sample["accuracy"] == pytest.approx(summary(run_dir)["bma"]["accuracy"], abs=1e-6)  # BMA of one
    missing = runner.invoke(app, ["eval", str(run_dir), "--checkpoint", "sample-9"])
    assert missing.exit_code == 3 and "sample-009.pt: no such posterior sample (the run has: sample-001)" \
        in one_error(missing.output)
    wrong = runner.invoke(app, ["eval", str(run_dir), "--checkpoint", "first"])
    assert wrong.exit_code == 2 and "expected last, best or sample-K" in one_error(wrong.output)


def test_eval_scores_an_exported_onnx_file_through_onnxruntime(run_dir: Path, tmp_path: Path) -> None:
    exported = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run_dir), "--onnx", "-o", str(exported)])
    assert result.exit_code == 0, result.output
    report = json.loads(exported.with_suffix(".json").read_text())
    scored = eval_json(str(exported))
    assert scored["n"] == 64 and "onnxruntime" in scored["source"]
    assert scored["accuracy"] == pytest.approx(report["accuracy"], abs=1e-9)
    assert scored["accuracy"] == pytest.approx(summary(run_dir)["accuracy"], abs=1e-6)

    exported.with_suffix(".pt").unlink()  # the recipe then comes from the source run named in the metadata
    assert eval_json(str(exported))["nll"] == pytest.approx(scored["nll"], abs=1e-6)

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(exported, alone / "model.onnx")
    moved = run_dir.with_name(run_dir.name + "-moved")
    run_dir.rename(moved)
    try:
        lost = runner.invoke(app, ["eval", str(alone / "model.onnx")])
    finally:
        moved.rename(run_dir)
    assert lost.exit_code == 3 and "cannot tell which data it was exported for" in one_error(lost.output)


def test_eval_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(torch.randn(64).numpy().tobytes())
    result = runner.invoke(app, ["eval", str(fake)])
    assert result.exit_code == 3 and "not a readable ONNX file" in one_error(result.output)
