"""The dashboard, driven with Textual's Pilot: live training on tiny digits data, stop/pause, replay, follow."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.message import Message
from textual.pilot import Pilot
from typer.testing import CliRunner

from compressor.cli import app as cli
from compressor.engine.trainer import run
from compressor.errors import TrainingDiverged
from compressor.events import Event, Pruned, RunStarted, StepDone, event_from_record
from compressor.recipe import load_recipe
from compressor.storage.rundir import read_jsonl
from compressor.tui.app import REDRAW_SECONDS, Dashboard, Job, train_with_dashboard
from compressor.tui.messages import EngineEvent, StepProgress
from compressor.tui.widgets import (
    CurvePlot,
    EventLog,
    HelpScreen,
    LayerTable,
    OptimizerPanel,
    ReliabilityPlot,
    RunHeader,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train.epochs=2", "data.limit=64", "data.val_limit=64", "train.batch_size=32", "model.name=resnet20",
        "train.log_every=1", "prune.target_epoch=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def training_job(out: Path, *overrides: str) -> Job:
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [*TINY, *overrides])
    return lambda on_event, should_stop: run(recipe, on_event, should_stop, out_dir=out, device="cpu")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 2-epoch run written headless, as `compressor train --no-tui` would leave it."""
    return training_job(tmp_path_factory.mktemp("runs"))(lambda e: None, lambda: False)


def drive(app: Dashboard, size: tuple[int, int], script: Callable[[Pilot], Awaitable[None]]) -> None:
    """Run the app headless for one pilot script (the suite has no async test plugin)."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await script(pilot)

    asyncio.run(main())


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the dashboard"
        await pilot.pause(0.05)


def screen_text(app: Dashboard) -> str:
    """The visible text of the exported SVG screenshot, one string."""
    svg = app.export_screenshot()
    return html.unescape("".join(re.findall(r"<text[^>]*>(.*?)</text>", svg))).replace("\xa0", " ")


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def log_text(app: Dashboard) -> str:
    return "\n".join(entry.plain for entry in app.query_one(EventLog).entries)


def test_live_training_fills_every_panel_and_prunes_update_the_table(tmp_path: Path) -> None:
    app = Dashboard(job=training_job(tmp_path))

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.run_dir is not None)
        await pilot.pause()
        assert sorted(app.state.points) == [1, 2]
        assert len(app.query_one("#loss", CurvePlot).drawn["train"]) == 2
        assert len(app.query_one("#accuracy", CurvePlot).drawn["sample"]) == 2
        assert ("BMA" in app.query_one("#accuracy", CurvePlot).drawn) == bool(app.state.last_epoch.bma)
        assert set(app.query_one("#remaining", CurvePlot).drawn) == {"params", "channels", "MACs"}
        assert app.query_one(ReliabilityPlot).bins
        assert "learning rate C2" in app.query_one(OptimizerPanel).values
        table = app.query_one(LayerTable)
        layers = app.state.layers
        assert table.row_count == len(layers) > 10
        assert any(kept < total for kept, total in table.rows_shown.values())  # emmcmc removed channels
        assert "temperature" in app.query_one(OptimizerPanel).values
        text = screen_text(app)
        assert "resnet20 · digits · emmcmc · cpu" in text and "epoch 2/2" in text and "finished" in text
        assert "epoch 2/2" in log_text(app) and "pruned" in log_text(app) and "E-step" in log_text(app)

        first, second = layers[0], layers[1]
        thinned = [{**first, "kept": first["total"] // 2}, {**second, "kept": 1}, *layers[2:]]
        app.post_message(EngineEvent(Pruned(epoch=2, global_step=4, newly_pruned=3, pruned_groups=3,
                                            total_groups=40, channel_sparsity=0.1, layers=thinned,
                                            reason="synthetic")))
        await pilot.pause(REDRAW_SECONDS + 0.2)  # live events are drawn on the redraw timer
        assert table.get_row(first["layer"])[1].plain == f"{first['total'] // 2}/{first['total']}"
        assert table.get_row(second["layer"])[1].plain == f"1/{second['total']}"
        assert "since the prune at step 4 (synthetic)" in str(table.border_subtitle)
        assert "pruned 3 channel groups" in log_text(app)

        await pilot.press("q")  # the run has finished: q just closes
        await pilot.pause()

    drive(app, (160, 48), script)
    assert app.return_code == 0 and (app.run_dir / "summary.json").is_file()


def test_pause_holds_the_training_thread_and_q_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    app = Dashboard(job=training_job(tmp_path, "train.epochs=4", "train.batch_size=16"))

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.state.step is not None)
        await pilot.press("p")
        await pilot.pause(0.5)  # the step in flight finishes, then the thread waits in should_stop
        held = app.state.global_step
        assert app.status == "paused" and "paused" in screen_text(app)
        await pilot.pause(1.0)
        assert app.state.global_step == held
        await pilot.press("q")
        await until(pilot, lambda: app.run_dir is not None)

    drive(app, (80, 24), script)
    assert app.return_code == 0 and app.error is None
    run_dir = app.run_dir
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[-1]["event"] == "run_finished" and records[-1]["stopped_early"] is True
    assert any(r["event"] == "log" and "checkpoint written" in r["message"] for r in records)
    assert records[-1]["summary"]["completed"] is False


def test_training_error_is_shown_and_sets_the_exit_code() -> None:
    def failing(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
        raise TrainingDiverged("loss became NaN/inf at epoch 1 step 3")

    app = Dashboard(job=failing)

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.error is not None)
        await pilot.pause()
        assert app.status == "failed"
        assert "training failed: loss became NaN/inf" in log_text(app)
        await pilot.press("q")
        await pilot.pause()

    drive(app, (80, 24), script)
    assert app.return_code == TrainingDiverged.exit_code == 5


def test_training_error_is_raised_again_once_the_ui_has_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `compressor train` relies on to print the error and exit with its code after the dashboard."""
    monkeypatch.setattr(Dashboard, "run", functools.partialmethod(App.run, headless=True, size=(80, 24)))

    def failing(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
        raise TrainingDiverged("loss became NaN/inf at epoch 1 step 3")

    with pytest.raises(TrainingDiverged, match="NaN"):
        train_with_dashboard(failing, external_stop=lambda: True)  # as after SIGTERM: nobody presses q


def test_replay_shows_every_epoch_of_a_finished_run(finished_run: Path) -> None:
    app = Dashboard(metrics=finished_run / "metrics.jsonl")

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.state.finished is not None)
        await pilot.pause()
        assert sorted(app.state.points) == [1, 2]
        assert len(app.query_one("#nll", CurvePlot).drawn["sample"]) == 2
        assert app.status == "finished"
        assert app.query_one("#body").max_scroll_y == 0  # 160x48: everything fits without scrolling
        assert "epoch 2/2" in screen_text(app)

    drive(app, (160, 48), script)


def test_small_terminal_scrolls_the_panels_and_help_opens(finished_run: Path) -> None:
    app = Dashboard(metrics=finished_run / "metrics.jsonl")

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.state.finished is not None)
        await pilot.pause()
        assert app.screen.has_class("-narrow")
        assert app.query_one("#body").max_scroll_y > 0
        assert "epoch 2/2" in screen_text(app) and "q quit" in screen_text(app)
        log = app.query_one(EventLog)
        assert max(line.cell_length for line in log.lines) <= log.scrollable_content_region.width  # re-wrapped
        await pilot.press("question_mark")
        assert "stop safely" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

    drive(app, (80, 24), script)


def test_follow_picks_up_lines_appended_after_start(finished_run: Path, tmp_path: Path) -> None:
    lines = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if '"event": "epoch"' in line) + 1
    live = tmp_path / "metrics.jsonl"
    live.write_text("".join(lines[:first_epoch]))
    app = Dashboard(metrics=live, follow=True)

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: 1 in app.state.points)
        assert app.status == "following" and app.state.finished is None
        rest = "".join(lines[first_epoch:])
        append(live, rest[:10])  # a writer caught mid-line: only complete lines count
        await pilot.pause(0.8)
        assert app.state.finished is None and 2 not in app.state.points
        append(live, rest[10:])
        await until(pilot, lambda: app.state.finished is not None, timeout=10)
        assert sorted(app.state.points) == [1, 2]
        assert app.status == "finished"

    drive(app, (160, 48), script)


def test_a_resumed_run_shows_the_epochs_before_the_resume(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    resumed = event_from_record({**records[0], "run_dir": str(run_dir), "resumed": True, "start_epoch": 2})
    assert isinstance(resumed, RunStarted)

    def resume(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
        append(run_dir / "metrics.jsonl", json.dumps(resumed.to_dict()) + "\n")  # the engine writes, then emits
        on_event(resumed)
        return run_dir

    app = Dashboard(job=resume)

    async def script(pilot: Pilot) -> None:
        await until(pilot, lambda: app.run_dir is not None)
        assert sorted(app.state.points) == [1, 2]
        assert app.state.started is resumed and app.state.finished is None
        assert "resuming resnet20" in log_text(app)

    drive(app, (80, 24), script)


def test_step_events_are_coalesced(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop stepping far faster than the screen redraws: few messages, few header redraws, last step shown."""
    started = event_from_record(read_jsonl(finished_run / "metrics.jsonl")[0])

    def fast(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
        on_event(started)
        for i in range(1, 5001):
            on_event(StepDone(epoch=0, step=i, global_step=i, total_steps=5000, loss=1.0, accuracy=0.5, lr=0.1,
                              images_per_second=1e4))
            should_stop()
        return finished_run

    redraws: list[int] = []
    original = RunHeader.show
    monkeypatch.setattr(RunHeader, "show", lambda self, state, *a: redraws.append(state.global_step)
                        or original(self, state, *a))
    app = Dashboard(job=fast)
    messages: list[Message] = []

    async def main() -> None:
        async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
            await until(pilot, lambda: app.run_dir is not None)
            await pilot.pause(0.6)

    asyncio.run(main())
    steps = [m for m in messages if isinstance(m, StepProgress)]
    assert app.state.global_step == 5000 and redraws[-1] == 5000
    assert len(steps) < 50 and len(redraws) < 50


def test_dashboard_command_rejects_a_folder_without_metrics(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", str(tmp_path)])
    assert result.exit_code == 3 and "no metrics.jsonl" in result.output

