"""The sparse variable-selection demo through the real CLI: of many correlated inputs only the true ones
survive, each with its posterior inclusion probability (docs/algorithm.md, section 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from compressor.cli import app

ROOT = Path(__file__).resolve().parent.parent


def write_selection_npz(path: Path, n: int = 2000, d: int = 1000, seed: int = 0) -> Path:
    """Equicorrelated inputs (rho 0.5); the label depends on features 0-4 only, non-linearly."""
    rng = np.random.default_rng(seed)
    x = np.sqrt(0.5) * rng.standard_normal((n, 1)) + np.sqrt(0.5) * rng.standard_normal((n, d))
    t = x[:, :5]
    f = 2 * t[:, 0] - 2 * t[:, 1] + 2 * np.tanh(2 * t[:, 2]) + 1.5 * t[:, 3] + 2 * np.sin(t[:, 4])
    f = f + 0.3 * rng.standard_normal(n)
    y = (f > np.median(f)).astype(np.int64)
    np.savez(path, X=x.astype(np.float32), y=y)
    return path


def test_variable_selection_recipe_keeps_exactly_the_true_features(tmp_path: Path) -> None:
    data = write_selection_npz(tmp_path / "sel.npz")
    result = CliRunner().invoke(app, ["train", str(ROOT / "recipes" / "variable_selection.yaml"), "--no-tui",
                                      "--out", str(tmp_path / "runs"), "--set", f"data.root={data}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((Path(result.output.strip().splitlines()[-1]) / "summary.json").read_text())
    assert summary["selected_features"] == [0, 1, 2, 3, 4]
    assert summary["accuracy"] > 0.85
    assert summary["param_sparsity"] > 0.9
    # the posterior inclusion probability of every feature, averaged over the samples
    inclusion = summary["inclusion_probability"]
    assert len(inclusion) == 1000
    assert min(inclusion[:5]) > 0.9 and max(inclusion[5:]) < 0.1
