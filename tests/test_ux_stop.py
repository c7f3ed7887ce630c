"""Stopping a run early, every way a user can: the exit code the README documents (130 for Ctrl-C, `q` or the
dashboard's quit; 143 for SIGTERM) and a last line that says where it stopped and what it last measured."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from typer.testing import CliRunner

from compressor.cli import app as cli
from compressor.cli import common
from compressor.storage.rundir import read_jsonl
from compressor.tui.app import Dashboard

ROOT = Path(__file__).resolve().parent.parent
# Dense sgd on little digits data, a step event per step: a stop lands mid-epoch.
TINY = ["train.epochs=2", "data.limit=256", "data.val_limit=64", "train.batch_size=16", "train.log_every=1",
        "method={name: sgd, lr: 0.05}", "prune={}"]
pytestmark = pytest.mark.usefixtures("one_thread")


def sets(*overrides: str) -> list[str]:
    return [arg for text in overrides for arg in ("--set", text)]


def records(out: Path, kind: str) -> list[dict]:
    return [r for path in out.glob("*/metrics.jsonl") for r in read_jsonl(path) if r["event"] == kind]


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the dashboard"
        await pilot.pause(0.05)


def drive(app: Dashboard, size: tuple[int, int], script: Callable[[Pilot], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await script(pilot)

    asyncio.run(main())


def screen_text(app: Dashboard) -> str:
    svg = app.export_screenshot()
    return html.unescape("".join(re.findall(r"<text[^>]*>(.*?)</text>", svg))).replace("\xa0", " ")


def train_in_dashboard(monkeypatch: pytest.MonkeyPatch, out: Path, size: tuple[int, int],
                       script: Callable[[Pilot], Awaitable[None]]) -> tuple[int, str, str]:
    """`compressor train` as on a terminal: the dashboard runs headless and `script` drives it."""
    monkeypatch.setattr(common, "interactive", lambda: True)
    monkeypatch.setattr(Dashboard, "run", functools.partialmethod(App.run, headless=True, size=size,
                                                                  auto_pilot=script))
    result = CliRunner().invoke(cli, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *sets(*TINY),
                                      "--out", str(out)])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("size", [(100, 30), (180, 50)])
def test_ctrl_c_in_the_dashboard_exits_130_with_the_stop_and_resume_lines(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: tuple[int, int]) -> None:
    seen: list[str] = []

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: pilot.app.state.step is not None)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: pilot.app.state.finished is not None)
        await pilot.pause(1.2)  # drawn on the redraw timer
        seen.append("\n".join(entry.plain for entry in pilot.app.query_one("#log").entries))

    code, stdout, stderr = train_in_dashboard(monkeypatch, tmp_path, size, script)
    assert code == 130, stderr
    (run_dir,) = tmp_path.iterdir()
    assert stdout.strip() == str(run_dir)
    assert "stopped at epoch 1 of 2, step " in stderr and "no evaluation yet" in stderr
    assert f"stopped; resume with: compressor train {ROOT / 'recipes' / 'quickstart.yaml'} --resume {run_dir}" \
        in stderr
    assert "finished: acc 0.00%" not in stderr + seen[0]
    assert "stopped at epoch 1 of 2" in seen[0] and "resume with: compressor train" in seen[0]


def test_quit_from_the_command_palette_stops_safely_and_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: pilot.app.state.step is not None)
        await pilot.press("p")  # paused, so the run cannot finish while the palette is typed into
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
        await pilot.press(*"quit")
        commands = pilot.app.screen.query_one(CommandList)
        await until(pilot, lambda: commands.option_count > 0
                    and "Quit" in str(commands.get_option_at_index(0).prompt))
        await pilot.press("enter")

    code, _, stderr = train_in_dashboard(monkeypatch, tmp_path, (100, 30), script)
    assert code == 130, stderr
    assert "Error" not in stderr and "error:" not in stderr
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert read_jsonl(run_dir / "metrics.jsonl")[-1]["stopped_early"] is True
    assert "stopped; resume with:" in stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_after_an_evaluation_names_the_step_and_shows_that_evaluation(tmp_path: Path, sig: int) -> None:
    """Through the real entry point: the line is the last evaluation's numbers, not a summary's zeros."""
    proc = subprocess.Popen([sys.executable, "-m", "compressor", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                             *sets(*TINY), "--no-tui", "--out", str(tmp_path)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(r["epoch"] == 1 for r in records(tmp_path, "step")):  # a step of epoch 2 (0-based 1)
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    (run_dir,) = tmp_path.iterdir()
    assert out.strip() == str(run_dir)  # progress went to stderr
    (epoch,) = records(tmp_path, "epoch")
    stopped = [line for line in err.splitlines() if line.startswith("stopped at epoch 2 of 2, step ")]
    assert len(stopped) == 1, err
    assert f"last evaluation (epoch 1): acc {100 * epoch['eval']['accuracy']:.2f}%" in stopped[0]
    assert "finished:" not in err


@pytest.fixture(scope="module")
def stopped_after_resume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run directory as a stop, a resume and a second stop before any new evaluation leave it: the last
    summary has no evaluation (its metrics are None). Returns it and its one epoch record."""
    out = tmp_path_factory.mktemp("runs")
    code = CliRunner().invoke(cli, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *sets(*TINY),
                                    "--no-tui", "--out", str(out)]).exit_code
    assert code == 0
    (run_dir,) = out.iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if '"event": "epoch"' in line)
    epoch, finished = json.loads(lines[first_epoch]), json.loads(lines[-1])
    summary = {**finished["summary"], **dict.fromkeys(("accuracy", "nll", "ece", "brier"))}
    stop = {"event": "log", "level": "info", "message": "stopped at epoch 2 step 3; checkpoint written"}
    again = [{**json.loads(lines[0]), "resumed": True, "start_epoch": 1}, stop,
             {**finished, "summary": summary, "completed": False, "stopped_early": True}]
    (run_dir / "metrics.jsonl").write_text("\n".join([*lines[:first_epoch + 1], *map(json.dumps, again)]) + "\n")
    return run_dir, epoch


@pytest.mark.parametrize("size", [(100, 30), (180, 50)])
def test_a_resumed_run_stopped_again_shows_the_evaluation_before_the_resume(
        stopped_after_resume: tuple[Path, dict], size: tuple[int, int]) -> None:
    run_dir, epoch = stopped_after_resume
    app = Dashboard(metrics=run_dir / "metrics.jsonl")
    log: list[str] = []

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.state.finished is not None)
        await pilot.pause()
        log.extend(entry.plain for entry in app.query_one("#log").entries)
        assert "stopped" in screen_text(app)

    drive(app, size, script)
    assert not any(line.startswith("finished:") for line in log)
    assert log[-2].startswith("stopped at epoch 2 of 2, step 3 of 16")
    assert f"last evaluation (epoch 1): acc {100 * epoch['eval']['accuracy']:.2f}%" in log[-2]
    assert log[-1] == f"resume with: compressor train {run_dir / 'recipe.yaml'} --resume {run_dir}"


def test_dashboard_no_tui_prints_the_same_last_lines(stopped_after_resume: tuple[Path, dict]) -> None:
    run_dir, epoch = stopped_after_resume
    result = CliRunner().invoke(cli, ["dashboard", str(run_dir), "--no-tui"])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()
    assert last[-2].startswith("stopped at epoch 2 of 2, step 3 of 16")
    assert f"last evaluation (epoch 1): acc {100 * epoch['eval']['accuracy']:.2f}%" in last[-2]
    assert last[-1] == f"resume with: compressor train {run_dir / 'recipe.yaml'} --resume {run_dir}"
