"""`compressor predict`: each input's class with its probability, predictive entropy and, from posterior
samples, their disagreement; the same numbers from a run directory, its exported .pt and its .onnx; images
and .npz arrays alike; --ood-threshold flags the uncertain ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from tests.conftest import train_quickstart

ROOT = Path(__file__).resolve().parent.parent
# emmcmc removes half the MACs and keeps two posterior samples of the pruned network.
TINY = ["train.epochs=5", "data.limit=128", "data.val_limit=64", "train.batch_size=32"]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = train_quickstart(tmp_path_factory.mktemp("runs"), TINY)
    assert len(list((run_dir / "samples").glob("sample-*.pt"))) == 2
    return run_dir


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight digits as 8x8 PNG files and the same pixels as an .npz array X (n, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    pixels = (load_digits().images[-8:] * 16).clip(0, 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    np.savez(folder.parent / "digits.npz", X=pixels[:, None])
    return folder, folder.parent / "digits.npz"


def predictions(out: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["predict", *args, "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["predictions"]


def one_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


def test_each_input_gets_class_probability_entropy_and_the_samples_disagreement(
        run_dir: Path, digits: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = digits
    rows = predictions(tmp_path / "p.json", str(run_dir), str(folder))
    assert [Path(r["input"]).name for r in rows] == [f"{i}.png" for i in range(8)]
    classes = [str(k) for k in range(10)]
    for row in rows:
        probs = np.asarray(row["probabilities"])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["class"] == classes[int(probs.argmax())] and row["probability"] == pytest.approx(probs.max())
        assert row["entropy"] == pytest.approx(-(probs * np.log(probs)).sum(), abs=1e-5)
        assert -1e-6 <= row["mutual_information"] <= row["entropy"] + 1e-6
        assert row["disagreement"] in (0.0, 0.5, 1.0)  # two samples
    result = runner.invoke(app, ["predict", str(run_dir), str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "input,class,probability,entropy,mutual_information,disagreement"
    assert len(result.stdout.splitlines()) == 9


def test_the_same_model_predicts_the_same_through_every_file_and_input_form(
        run_dir: Path, digits: tuple[Path, Path], tmp_path: Path) -> None:
    folder, npz = digits
    for flags, stem in (([], "single"), (["--bma"], "bma")):
        result = runner.invoke(app, ["export", str(run_dir), "--onnx", *flags, "-o", str(tmp_path / f"{stem}.onnx")])
        assert result.exit_code == 0, result.output

    def probs(*args: str) -> np.ndarray:
        return np.asarray([r["probabilities"] for r in predictions(tmp_path / "p.json", *args)])

    checkpoint = probs(str(run_dir), str(folder), "--no-bma")
    np.testing.assert_allclose(probs(str(run_dir), str(npz), "--no-bma"), checkpoint, atol=1e-6)
    np.testing.assert_allclose(probs(str(tmp_path / "single.pt"), str(folder)), checkpoint, atol=1e-5)
    np.testing.assert_allclose(probs(str(tmp_path / "single.onnx"), str(folder)), checkpoint, atol=1e-5)
    average = predictions(tmp_path / "p.json", str(run_dir), str(folder))
    exported = predictions(tmp_path / "p.json", str(tmp_path / "bma.pt"), str(folder))
    for mine, theirs in zip(average, exported, strict=True):
        assert mine["disagreement"] == theirs["disagreement"]
        np.testing.assert_allclose(mine["probabilities"], theirs["probabilities"], atol=1e-5)
    onnx_rows = predictions(tmp_path / "p.json", str(tmp_path / "bma.onnx"), str(folder))
    np.testing.assert_allclose([r["probabilities"] for r in onnx_rows], [r["probabilities"] for r in average],
                               atol=1e-5)
    assert "disagreement" not in onnx_rows[0]  # an averaging graph has no samples to disagree


def test_ood_threshold_flags_the_uncertain_inputs(run_dir: Path, digits: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = digits
    rows = predictions(tmp_path / "p.json", str(run_dir), str(folder), "--ood-threshold", "0")
    assert all(r["uncertain"] for r in rows)
    median = float(np.median([r["entropy"] for r in rows]))
    result = runner.invoke(app, ["predict", str(run_dir), str(folder), "--ood-threshold", str(median)])
    assert result.exit_code == 0, result.output
    flagged = [line.split(",")[-1] for line in result.stdout.splitlines()[1:]]
    assert flagged.count("True") == sum(r["entropy"] > median for r in rows)
    assert f"{flagged.count('True')} uncertain (entropy > {median:g} nats)" in result.stderr
    assert f"ln 10 = {math.log(10):.3f}" in result.stderr


def test_bad_inputs_and_an_existing_output_are_refused_in_one_line(run_dir: Path, digits: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    folder, _ = digits
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = runner.invoke(app, ["predict", str(run_dir), str(broken)])
    assert result.exit_code == 2 and "broken.png: not a readable image" in one_error(result.output)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, X=np.zeros((3, 64), dtype=np.float32))
    result = runner.invoke(app, ["predict", str(run_dir), str(wrong)])
    assert result.exit_code == 2 and "X has shape (3, 64); the model takes (n, 1, 8, 8)" in one_error(result.output)
    kept = tmp_path / "mine.csv"
    kept.write_text("my notes\n")
    result = runner.invoke(app, ["predict", str(run_dir), str(folder), "-o", str(kept)])
    assert result.exit_code == 4 and "already exists; pass --force" in one_error(result.output)
    assert kept.read_text() == "my notes\n"
    result = runner.invoke(app, ["predict", str(tmp_path), str(folder)])
    assert result.exit_code == 3 and "not a run directory that trained" in one_error(result.output)
