"""`compressor dashboard` on a server: without a terminal (or with --no-tui) a run is printed as plain lines and
the command ends; --follow prints what a live run appends until it finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli import app

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train.epochs=2", "data.limit=64", "data.val_limit=32", "train.batch_size=32", "method={name: sgd}",
        "prune={}"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    args = [arg for text in TINY for arg in ("--set", text)]
    result = CliRunner().invoke(app, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *args, "--no-tui",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def dashboard(*args: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compressor", "dashboard", *args], cwd=ROOT, text=True,
                            stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


def test_dashboard_into_a_file_prints_the_run_and_exits(finished_run: Path, tmp_path: Path) -> None:
    listing = tmp_path / "run.txt"
    with open(listing, "w") as fh:
        proc = dashboard(str(finished_run), stdout=fh)
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = listing.read_text().splitlines()
    assert lines[0].startswith("training resnet20 on digits (64 train / 32 eval, input 1x8x8) with sgd")
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert lines[-1].startswith("finished: acc ")
    assert "\x1b" not in listing.read_text()  # no escape sequences of a full-screen app


def test_no_tui_option_and_an_unfinished_run_says_where_it_stands(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / finished_run.name
    run_dir.mkdir()
    lines = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if '"event": "epoch"' in line)
    (run_dir / "metrics.jsonl").write_text("".join(lines[:first_epoch + 1]))
    result = CliRunner().invoke(app, ["dashboard", str(run_dir), "--no-tui"])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("in progress or interrupted at the end of epoch 1 of 2")
    assert "last evaluation (epoch 1): acc" in last and "--follow keeps reading" in last


def test_follow_prints_appended_lines_until_the_run_finishes(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / finished_run.name
    run_dir.mkdir()
    lines = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if '"event": "epoch"' in line)
    (run_dir / "metrics.jsonl").write_text("".join(lines[:first_epoch + 1]))
    proc = dashboard(str(run_dir), "--follow", stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(2)]  # the run's first line, then epoch 1
        assert seen[1].startswith("epoch 1/2") and proc.poll() is None  # still following
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write("".join(lines[first_epoch + 1:]))
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert rest.splitlines()[0].startswith("epoch 2/2") and rest.splitlines()[-1].startswith("finished: acc ")


def test_the_first_line_shows_the_input_size_the_run_recorded(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / finished_run.name
    run_dir.mkdir()
    first, *rest = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)
    started = {**json.loads(first), "input_shape": [3, 8, 8]}
    (run_dir / "metrics.jsonl").write_text(json.dumps(started) + "\n" + "".join(rest))
    result = CliRunner().invoke(app, ["dashboard", str(run_dir), "--no-tui"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("training resnet20 on digits (64 train / 32 eval, input 3x8x8)")
