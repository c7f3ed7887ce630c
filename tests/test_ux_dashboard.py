"""What the dashboard shows must be true: percentage axes end at 100, reliability bars say how many examples
they stand on, the optimizer panel names its numbers for what they are, a repeated E-step is logged once, the
layer footer is never cut, the ETA counts training rather than start-up, and the last line outlives the app.
Driven with Textual's pilot at 100x30 and 180x50, asserting what is on screen."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.pilot import Pilot
from typer.testing import CliRunner

from compressor.cli import app as cli
from compressor.cli import common
from compressor.events import EpochEnd, RunStarted, StepDone, event_from_record
from compressor.tui.app import Dashboard
from compressor.tui.messages import EngineEvent, StepProgress
from compressor.tui.widgets import CurvePlot, EventLog, LayerTable, OptimizerPanel, ReliabilityPlot
from tests.conftest import train_quickstart

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(100, 30), (180, 50)]
# emmcmc on little digits data: channels removed after epoch 2, a posterior sample at epoch 3.
TINY = ["train.epochs=3", "data.limit=128", "data.val_limit=64", "train.batch_size=32", "method.rule=evidence"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    run_dir = train_quickstart(tmp_path_factory.mktemp("runs"), TINY)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def write(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def replay(metrics: Path, size: tuple[int, int], script: Callable[[Dashboard, Pilot], Awaitable[None]]) -> None:
    app = Dashboard(metrics=metrics)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 60
            while app.state.finished is None:
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            await pilot.pause()
            await script(app, pilot)

    asyncio.run(main())


def screen_text(app: App) -> str:
    svg = app.export_screenshot()
    return html.unescape("".join(re.findall(r"<text[^>]*>(.*?)</text>", svg))).replace("\xa0", " ")


async def on_screen(app: Dashboard, pilot: Pilot, widget: str) -> str:
    app.query_one(widget).scroll_visible(animate=False)
    await pilot.pause(0.2)
    return " ".join(screen_text(app).split())


def y_ticks(plot: CurvePlot) -> list[float]:
    return [float(m.group(1)) for line in plot.render().plain.splitlines()
            if (m := re.match(r"^\s*(-?[\d.]+)┤", line))]


def iter_accuracies(records: list[dict]) -> list[float | None]:
    """Near-perfect accuracies for the epoch records (where an axis padded past the top reads ~110 %)."""
    values = iter([0.97, 0.995, 1.0])
    return [next(values) if r["event"] == "epoch" else None for r in records]


@pytest.mark.parametrize("size", SIZES)
def test_percentage_axes_end_at_100(records: list[dict], tmp_path: Path, size: tuple[int, int]) -> None:
    high = [{**r, "eval": {**r["eval"], "accuracy": acc}} if r["event"] == "epoch" else r
            for r, acc in zip(records, iter_accuracies(records), strict=True)]

    async def script(app: Dashboard, pilot: Pilot) -> None:
        accuracy, remaining = app.query_one("#accuracy", CurvePlot), app.query_one("#remaining", CurvePlot)
        assert max(accuracy.drawn["sample"]) == 100.0
        assert max(y_ticks(accuracy)) == 100.0 and max(y_ticks(remaining)) == 100.0
        text = await on_screen(app, pilot, "#accuracy")
        assert "100.0┤" in text and max(float(t) for t in re.findall(r"(\d+\.\d)┤", text)) == 100.0

    replay(write(tmp_path, high), size, script)


@pytest.mark.parametrize("size", SIZES)
def test_reliability_bars_fade_with_the_examples_they_hold(records: list[dict], tmp_path: Path,
                                                            size: tuple[int, int]) -> None:
    bins = [{"lo": i / 10, "hi": (i + 1) / 10, "count": 0, "confidence": 0.0, "accuracy": 0.0} for i in range(10)]
    bins[3] = {**bins[3], "count": 2, "confidence": 0.35, "accuracy": 1.0}
    bins[9] = {**bins[9], "count": 298, "confidence": 0.97, "accuracy": 0.98}
    last_epoch = max(i for i, r in enumerate(records) if r["event"] == "epoch")
    changed = [dict(r) for r in records]
    changed[last_epoch] = {**records[last_epoch], "eval": {**records[last_epoch]["eval"], "reliability": bins}}

    async def script(app: Dashboard, pilot: Pilot) -> None:
        plot = app.query_one(ReliabilityPlot)
        assert [b["count"] for b in plot.bins] == [2, 298]
        assert plot.shades[0] < 0.2 and plot.shades[1] == 1.0  # 2 examples: a faint bar
        footer = str(plot.border_subtitle)
        assert footer.startswith("ECE 0.1543 · 3") and "1 faint (<1 %" in footer
        assert len(footer) <= plot.size.width - 6 and footer in await on_screen(app, pilot, "#reliability")

    replay(write(tmp_path, changed), size, script)


def test_reliability_png_fades_and_labels_small_bins() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compressor.compare.plots import _reliability_panel

    bins = [{"lo": 0.3, "hi": 0.4, "count": 2, "confidence": 0.35, "accuracy": 1.0},
            {"lo": 0.9, "hi": 1.0, "count": 298, "confidence": 0.97, "accuracy": 0.98}]
    fig, ax = plt.subplots()
    _reliability_panel(ax, {"method": "emmcmc", "ece": 0.02, "reliability": bins}, "tab:blue")
    alphas = [patch.get_alpha() for patch in ax.patches]
    labels = sorted(text.get_text() for text in ax.texts)
    plt.close(fig)
    assert alphas[0] < 0.2 and alphas[1] == 1.0 and labels == ["2", "298"]


@pytest.mark.parametrize("size", SIZES)
def test_optimizer_panel_names_the_estep_number_and_shows_tau_once(records: list[dict], tmp_path: Path,
                                                                   size: tuple[int, int]) -> None:
    async def script(app: Dashboard, pilot: Pilot) -> None:
        values = app.query_one(OptimizerPanel).values
        assert "E-step mean p*" in values and "E-step π" not in values
        assert "τ (every weight)" in values and not {"τ mean", "τ min", "τ max"} & set(values)
        text = await on_screen(app, pilot, "#optimizer")
        assert "E-step mean p*" in text and "τ min" not in text

    replay(write(tmp_path, records), size, script)

    paper = [{**r, "rule": "paper", "pi": 2.05e-13} if r["event"] == "estep" else r for r in records]

    async def budget(app: Dashboard, pilot: Pilot) -> None:
        assert app.query_one(OptimizerPanel).values["E-step π, set by the budget"] == "2.05e-13"
        assert "set by the budget" in await on_screen(app, pilot, "#optimizer")

    replay(write(tmp_path, paper), size, budget)


@pytest.mark.parametrize("size", SIZES)
def test_a_repeated_estep_is_logged_once(records: list[dict], tmp_path: Path, size: tuple[int, int]) -> None:
    last_estep = max(i for i, r in enumerate(records) if r["event"] == "estep")
    repeated = [*records[:last_estep + 1], *[{**records[last_estep], "epoch": e} for e in (4, 5, 6)],
                *records[last_estep + 1:]]

    async def script(app: Dashboard, pilot: Pilot) -> None:
        log = [entry.plain for entry in app.query_one(EventLog).entries]
        esteps = [line for line in log if line.startswith("E-step")]
        assert len(esteps) == len(set(esteps)) == sum(r["event"] == "estep" for r in records)

    replay(write(tmp_path, repeated), size, script)


@pytest.mark.parametrize("size", SIZES)
def test_the_layer_footer_fits_its_border(records: list[dict], tmp_path: Path, size: tuple[int, int]) -> None:
    prune = next(r for r in records if r["event"] == "pruned")
    long = {**prune, "reason": "target 50% of macs reached after a long and winding schedule of removals"}
    changed = [long if r is prune else r for r in records]

    async def script(app: Dashboard, pilot: Pilot) -> None:
        table = app.query_one(LayerTable)
        footer = str(table.border_subtitle)
        assert len(footer) <= table.size.width - 4 and footer.startswith(f"{sum(k for k, _ in table.rows_shown.values())}/")
        assert footer in await on_screen(app, pilot, "#layers")

    replay(write(tmp_path, changed), size, script)


@pytest.mark.parametrize("size", SIZES)
def test_the_eta_counts_training_not_the_start(records: list[dict], size: tuple[int, int]) -> None:
    """100 steps per epoch, 4 epochs: the first step 20 s after the start, the first epoch slow, then 20 steps
    a second. After 200 steps the ETA is 200 steps / 20 per second = 10 s (not 45 s of start-up averaged in)."""
    started = event_from_record({**records[0], "epochs": 4, "steps_per_epoch": 100})
    epoch = event_from_record(next(r for r in records if r["event"] == "epoch"))
    assert isinstance(started, RunStarted) and isinstance(epoch, EpochEnd)

    def step(g: int) -> StepDone:
        return StepDone(epoch=g // 100, step=g % 100, global_step=g, total_steps=400, loss=1.0, accuracy=0.5,
                        lr=0.1, images_per_second=640.0)

    timeline = [(0.0, EngineEvent(started)), (20.0, StepProgress(step(20))), (30.0, StepProgress(step(60))),
                (40.0, EngineEvent(epoch)), (42.5, StepProgress(step(150))), (45.0, StepProgress(step(200)))]
    app = Dashboard(job=lambda on_event, should_stop: Path("unused"))
    app.on_mount = lambda: None  # type: ignore[method-assign]  # no training thread: the timeline is posted

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            for at, message in timeline:
                message.at = at
                app.post_message(message)
            await pilot.pause(1.5)
            assert app.state.eta_seconds == pytest.approx(10.0)
            assert "ETA 0:10" in screen_text(app)

    asyncio.run(main())


def test_after_q_the_final_line_stays_on_the_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def script(pilot: Pilot) -> None:
        deadline = time.monotonic() + 120
        while pilot.app.run_dir is None:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.press("q")

    monkeypatch.setattr(common, "interactive", lambda: True)
    monkeypatch.setattr(Dashboard, "run", functools.partialmethod(App.run, headless=True, size=(100, 30),
                                                                  auto_pilot=script))
    args = [arg for text in ["train.epochs=1", "data.limit=64", "data.val_limit=32", "method={name: sgd}",
                             "prune={}"] for arg in ("--set", text)]
    result = CliRunner().invoke(cli, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *args,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((Path(result.stdout.strip()) / "summary.json").read_text())
    assert result.stderr.strip().splitlines()[-1].startswith(f"finished: acc {100 * summary['accuracy']:.2f}%")
