"""Export speed-ups that can be trusted: timed on one thread by thread CPU time in interleaved rounds, stored
with their spread and 95 % interval, and flagged (in the export report and in the leaderboard) when the rounds
disagree too much or the speed-up exceeds what the MAC reduction can buy."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app
from compressor.compare.leaderboard import aggregate, markdown, run_metrics
from compressor.compare.runner import export_report
from compressor.export.pipeline import timing_summary
from tests.conftest import train_quickstart

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train.epochs=1", "data.limit=64", "data.val_limit=32", "train.batch_size=32", "method={name: sgd}",
        "prune={}"]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def rounds(base: float, ratio: float, noise: float, n: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Dense and exported seconds of `n` rounds: the machine's speed drifts per round (both runs alike), and
    each ratio wobbles by up to `noise`."""
    rng = random.Random(seed)
    dense, exported = [], []
    for _ in range(n):
        slow = rng.uniform(1.0, 3.0)
        dense.append(base * slow)
        exported.append(base * slow / (ratio * rng.uniform(1 - noise, 1 + noise)))
    return dense, exported


def summary_of(ratio: float, noise: float, n: int, mac_reduction: float) -> dict:
    d1, e1 = rounds(1e-4, ratio, noise, n)
    d64, e64 = rounds(5e-3, ratio, noise, n, seed=1)
    return timing_summary({"1": d1, "64": d64}, {"1": e1, "64": e64}, mac_reduction)


def test_paired_rounds_give_the_speedup_despite_a_drifting_machine() -> None:
    timed = summary_of(ratio=1.8, noise=0.02, n=60, mac_reduction=2.0)
    assert timed["speedup"]["64"] == pytest.approx(1.8, rel=0.02)
    assert timed["speedup_uncertainty"]["64"] < 0.01 and timed["timing"]["trustworthy"] is True
    assert timed["timing"]["notes"] == [] and timed["timing"]["rounds"] == 60


def test_few_disagreeing_rounds_are_flagged_with_the_reason() -> None:
    timed = summary_of(ratio=1.8, noise=0.4, n=7, mac_reduction=2.0)
    assert timed["timing"]["trustworthy"] is False
    assert any(note.startswith("batch 64: the speed-up is uncertain by ±") and "over 7 rounds" in note
               for note in timed["timing"]["notes"])


def test_a_speedup_beyond_the_mac_reduction_is_flagged() -> None:
    timed = summary_of(ratio=5.4, noise=0.01, n=60, mac_reduction=2.04)
    assert timed["timing"]["trustworthy"] is False
    assert "batch 64: 5.40x is more than a 2.04x MAC reduction can buy" in timed["timing"]["notes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_quickstart(tmp_path_factory.mktemp("runs"), TINY)


def test_export_report_stores_the_spread_and_says_how_it_timed(run_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(run_dir), "--onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    timing = report["timing"]
    assert timing["clock"] == "thread CPU time" and timing["threads"] == 1 and timing["rounds"] >= 7
    assert set(report["speedup_spread"]) == set(report["speedup_uncertainty"]) == {"1", "64"}
    assert isinstance(timing["trustworthy"], bool) and (timing["trustworthy"] or timing["notes"])
    printed = " ".join(result.stdout.split())  # rich wraps at the terminal's width
    assert "timed on one thread by thread CPU time" in printed
    assert f"{report['speedup']['64']:.2f}x ±{100 * report['speedup_uncertainty']['64']:.0f}%" in printed
    assert ("not trustworthy" in printed) == (not timing["trustworthy"])


def test_compare_retimes_an_export_report_written_without_spreads(run_dir: Path, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    old = {"latency_ms": {"1": 1.0, "64": 9.0}, "latency_ms_dense": {"1": 2.0, "64": 50.0},
           "speedup": {"1": 2.0, "64": 5.55}}
    (exports / f"{run_dir.name}.json").write_text(json.dumps(old))
    report = export_report(run_dir, exports, budget_s=0.05)
    assert "timing" in report and json.loads((exports / f"{run_dir.name}.json").read_text())["timing"]


def board_row(method: str, reports: list[dict | None]) -> dict:
    summary = {"accuracy": 0.9, "nll": 0.3, "ece": 0.02, "brier": 0.1, "params": 100, "params_nonzero": 50,
               "macs": 1e6, "macs_dense": 2e6, "param_sparsity": 0.5, "channel_sparsity": 0.5, "train_seconds": 3.0}
    runs = [(f"{method}-{i}", run_metrics(summary, report)) for i, report in enumerate(reports)]
    return aggregate(method, "structured", runs)


def test_the_leaderboard_marks_a_timing_not_to_be_trusted() -> None:
    good = summary_of(ratio=1.8, noise=0.02, n=60, mac_reduction=2.0)
    implausible = summary_of(ratio=5.4, noise=0.01, n=60, mac_reduction=2.0)
    old = {k: good[k] for k in ("latency_ms", "latency_ms_dense", "speedup")}
    rows = [board_row("l1_filter", [good]), board_row("random", [implausible]), board_row("depgraph", [old]),
            board_row("emmcmc", [good, implausible])]
    assert [row["timing_trustworthy"] for row in rows] == [True, False, False, False]
    board = {"model": "resnet20", "dataset": "digits", "epochs": 8, "prune_epoch": 5, "target": 0.5, "seeds": 1,
             "rows": rows, "errors": {}}
    text = markdown(board)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "(?)" not in lines["l1_filter"] and f"1.80x ±{100 * good['speedup_uncertainty']['64']:.0f}%" \
        in lines["l1_filter"]
    assert all("(?)" in lines[m] for m in ("random", "depgraph", "emmcmc"))
    notes = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert set(notes) == {"- random", "- depgraph", "- emmcmc"}
    assert "random-0: batch 64: 5.40x is more than a 2.00x MAC reduction can buy" in notes["- random"]
    assert notes["- depgraph"] == "- depgraph: depgraph-0: timed before spreads were recorded"
    assert "emmcmc-1: batch 64: 5.40x is more than" in notes["- emmcmc"] and "emmcmc-0" not in notes["- emmcmc"]
