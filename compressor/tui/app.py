"""The dashboard app: live training in a thread worker, or a run's metrics.jsonl replayed / followed.

The engine never sees Textual: training gets a plain `on_event` callback that posts messages and a plain
`should_stop` that also implements pause (the training thread waits there between steps). Every worker
error arrives in `on_worker_state_changed`, the one place that turns it into UI state and an exit code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, NamedTuple

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from compressor.errors import CompressorError, RunDirError
from compressor.events import Event, RunStarted, StepDone, event_from_record
from compressor.sinks.console import Narrator, resume_command
from compressor.storage.rundir import read_jsonl
from compressor.tui.messages import EngineEvent, EventBatch, StepProgress
from compressor.tui.source import MetricsTail
from compressor.tui.state import CURVES, HEADER, LAYERS, OPTIMIZER, RELIABILITY, RunState
from compressor.tui.widgets import (
    CurvePlot,
    EventLog,
    HelpScreen,
    LayerTable,
    OptimizerPanel,
    ReliabilityPlot,
    RunHeader,
)
from compressor.tui.widgets.curves import AMBER, CYAN, GREEN, MAGENTA, Series

Job = Callable[[Callable[[Event], None], Callable[[], bool]], Path]
"""Training as the dashboard sees it: called with (on_event, should_stop) in a thread, returns the run dir."""

POLL_SECONDS = 0.5
PAUSE_POLL_SECONDS = 0.2
REDRAW_SECONDS = 1.0  # the header follows the steps at this pace
PANEL_SECONDS = 10.0  # while training runs here, the plots redraw at most this often
HEAVY = {CURVES, RELIABILITY}

CSS = """
#body { height: 1fr; }
#panels { layout: grid; grid-gutter: 0; }
.panel { border: round $primary 50%; border-title-color: $text; border-subtitle-color: $text-muted;
         background: $surface; }
.panel:focus { border: round $accent; }
OptimizerPanel { padding: 0 1; height: 100%; }
LayerTable, EventLog { height: 100%; scrollbar-gutter: stable; }
EventLog { overflow-x: hidden; }
Screen.-wide #panels { grid-size: 3; grid-columns: 1fr 1fr 1fr; grid-rows: 1fr 1fr 1fr; height: 100%;
                       min-height: 36; }
Screen.-narrow #panels { grid-size: 2; grid-columns: 1fr 1fr; grid-rows: 12; height: auto; }
Screen.-narrow #layers, Screen.-narrow #log { column-span: 2; }
Screen.-narrow #layers { row-span: 2; }
"""


def error_text(error: BaseException) -> str:
    if isinstance(error, CompressorError):
        return str(error)
    return f"{error.__class__.__name__}: {error}"


class Dashboard(App[None]):
    """One app for the three modes: `job=` trains live, `metrics=` replays (and with `follow=` keeps reading)."""

    TITLE = "compressor"
    CSS = CSS
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [(0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "stop", "quit"),
        Binding("ctrl+q,ctrl+c", "stop", "quit", show=False, priority=True),
        Binding("p", "pause", "pause/resume"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, *, job: Job | None = None, metrics: Path | None = None, follow: bool = False,
                 external_stop: Callable[[], bool] | None = None,
                 resume_hint: Callable[[Path], str] | None = None) -> None:
        super().__init__()
        self.job, self.metrics, self.follow = job, metrics, follow
        self.external_stop = external_stop or (lambda: False)
        self.resume_hint = resume_hint or (lambda run_dir: resume_command(run_dir))
        self.state = RunState()
        self.run_dir: Path | None = None
        self.error: BaseException | None = None
        self.stop_requested = threading.Event()
        self.running = threading.Event()  # cleared while paused
        self.running.set()
        self._unmounted = threading.Event()
        self._job_done = False
        self._pending: set[str] = set()
        self._step_posted_at = 0.0
        self._drawn_at: float | None = None  # when the HEAVY panels were last redrawn (None: not yet)
        self._held_step: StepDone | None = None
        self.job_started = threading.Event()
        self.job_finished = threading.Event()  # set by the training thread itself, even if the UI is gone

    # -- layout -------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with VerticalScroll(id="body"), Grid(id="panels"):
            yield CurvePlot("train loss", [Series("train", "train_loss", AMBER)], id="loss")
            yield CurvePlot("eval accuracy %", [Series("sample", "accuracy", CYAN, 100),
                                                Series("BMA", "bma_accuracy", GREEN, 100)], ymax=100,
                            id="accuracy")
            yield CurvePlot("eval NLL", [Series("sample", "nll", CYAN), Series("BMA", "bma_nll", GREEN)],
                            id="nll")
            yield CurvePlot("ECE", [Series("sample", "ece", CYAN), Series("BMA", "bma_ece", GREEN)], id="ece")
            yield CurvePlot("remaining %", [Series("params", "params_left", AMBER, 100),
                                            Series("channels", "channels_left", CYAN, 100),
                                            Series("MACs", "macs_left", MAGENTA, 100)],
                            ylim=(0, 100), id="remaining")
            yield ReliabilityPlot(id="reliability")
            yield LayerTable(id="layers")
            yield OptimizerPanel(id="optimizer")
            yield EventLog(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self._show({HEADER, OPTIMIZER})
        self.set_interval(REDRAW_SECONDS, self._redraw_pending)
        if self.job is not None:
            self.run_worker(self._train, name="train", thread=True, exit_on_error=False)
        elif self.metrics is not None:
            self.run_worker(self._watch, name="watch", thread=True, exit_on_error=False)

    def on_unmount(self) -> None:
        """If the UI goes away first (a crash), the training thread still stops at a step and checkpoints."""
        self._unmounted.set()
        self.stop_requested.set()
        self.running.set()

    # -- workers (run in threads; they only post messages) -------------------------------------------------
    def _train(self) -> Path:
        """Training thread. The outcome is also kept here: an app closed by any path (the palette's quit, a
        crash) delivers no worker-state message, and the CLI still needs the run directory or the error."""
        assert self.job is not None
        self.job_started.set()
        try:
            self.run_dir = self.job(self._post_event, self._should_stop)
            return self.run_dir
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._flush_step()
            self.job_finished.set()

    def _post_event(self, event: Event) -> None:
        """Training thread. Step events are thinned before they become messages: a loop may step thousands of
        times a second and each message is UI-thread work holding the GIL. At most one per REDRAW_SECONDS is
        posted; the newest held one goes out before the next other event, before a pause and at the end."""
        if isinstance(event, StepDone):
            now = time.monotonic()
            if now - self._step_posted_at < REDRAW_SECONDS:
                self._held_step = event
                return
            self._step_posted_at, self._held_step = now, None
            self.post_message(StepProgress(event))
            return
        self._flush_step()
        self.post_message(EngineEvent(event))

    def _flush_step(self) -> None:
        held, self._held_step = self._held_step, None
        if held is not None:
            self.post_message(StepProgress(held))

    def _should_stop(self) -> bool:
        if not self.running.is_set():
            self._flush_step()
        while not self.running.wait(PAUSE_POLL_SECONDS):
            if self.external_stop():
                break
        return self.stop_requested.is_set() or self.external_stop()

    def _watch(self) -> None:
        assert self.metrics is not None
        tail = MetricsTail(self.metrics)
        self.post_message(EventBatch(tail.read_new(), live=False))
        while self.follow and not self._unmounted.wait(POLL_SECONDS):
            events = tail.read_new()
            if events:
                self.post_message(EventBatch(events, live=True))

    # -- messages -----------------------------------------------------------------------------------------
    # Live events are only folded into the state here and drawn by `_redraw_pending` on a timer: every
    # redraw takes the GIL from the training thread, so the UI's cost must not follow the event rate.
    def on_step_progress(self, message: StepProgress) -> None:
        self._pending |= self.state.apply(message.event, message.at)
        self.query_one(EventLog).add_event(message.event, live=True)

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, RunStarted) and event.resumed:
            self._load_history(Path(event.run_dir) / "metrics.jsonl")
        self._pending |= self.state.apply(event, message.at)
        self.query_one(EventLog).add_event(event, live=True)

    def _redraw_pending(self, now: bool = False) -> None:
        """Header, log, layer table and optimizer panel (a few ms to ~30 ms) are drawn on every tick. The six
        plots (~0.15 s of CPU at 160x48 on a slow core, holding the GIL all along) wait PANEL_SECONDS between
        redraws while this process trains, so a tiny recipe's short epochs cannot make the UI a sizeable
        share of the run. The first epoch, the end of training, a pause or a stop are drawn at once."""
        log = self.query_one(EventLog)
        light, heavy = self._pending - HEAVY, self._pending & HEAVY
        if light or log.unwritten:
            log.flush()
            self._show(light)
        wall = time.monotonic()
        live = self.job is not None and not self._job_done
        waiting = live and not now and self._drawn_at is not None and wall - self._drawn_at < PANEL_SECONDS
        if heavy and not waiting:
            self._show(heavy)
            self._drawn_at = wall
        self._pending = heavy if waiting else set()

    def _load_history(self, metrics: Path) -> None:
        """A resumed run continues the curves it had drawn: replay the records written before this resume."""
        records = read_jsonl(metrics) if metrics.is_file() else []
        starts = [i for i, r in enumerate(records) if r.get("event") == RunStarted.kind]
        history = [e for r in records[:starts[-1]] if (e := event_from_record(r)) is not None] if starts else []
        self._fold(history, None)

    def on_event_batch(self, message: EventBatch) -> None:
        self._fold(message.events, message.at if message.live else None)

    def _fold(self, events: list[Event], at: float | None) -> None:
        """Apply many events, then draw once; `at` is None for records replayed from the past."""
        changed = {HEADER}
        log = self.query_one(EventLog)
        for event in events:
            changed |= self.state.apply(event, at)
            log.add_event(event, live=at is not None)
        finished = self.state.finished
        if at is None and finished is not None and finished.stopped_early and events:
            log.add_line(f"resume with: {self.resume_hint(Path(finished.run_dir))}", "yellow", live=False)
        self._pending |= changed
        self._redraw_pending(now=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        log = self.query_one(EventLog)
        if event.worker.name == "train":
            self._job_done = True
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            assert error is not None
            self.error = error
            what = "training" if event.worker.name == "train" else "reading metrics.jsonl"
            log.add_line(f"{what} failed: {error_text(error)} — press q to quit", "bold red")
            self.notify(error_text(error), title=f"{what} failed", severity="error", timeout=60)
        elif event.worker.name == "train":
            self.run_dir = event.worker.result
            finished = self.state.finished
            if finished is not None and finished.stopped_early and self.run_dir is not None:
                log.add_line(f"resume with: {self.resume_hint(self.run_dir)}", "yellow")
            if not (self.stop_requested.is_set() or self.external_stop()):
                log.add_line("training finished — press q to close the dashboard", "bold green")
        if self._job_done and (self.stop_requested.is_set() or self.external_stop()):
            self.exit(return_code=self.exit_code)
        self.refresh_bindings()
        self._pending.add(HEADER)
        self._redraw_pending(now=True)

    # -- actions ------------------------------------------------------------------------------------------
    def action_stop(self) -> None:
        """q: quit a viewer or a finished run at once; a live run first finishes its step and checkpoints."""
        if self.job is None or self._job_done:
            self.exit(return_code=self.exit_code)
            return
        if self.stop_requested.is_set():
            self.notify("still finishing the current step…")
            return
        self.stop_requested.set()
        self.running.set()
        self.query_one(EventLog).add_line("stopping after the current step; a checkpoint will be written",
                                          "bold yellow")
        self.refresh_bindings()
        self._pending.add(HEADER)
        self._redraw_pending(now=True)

    def action_quit(self) -> None:
        """The command palette's Quit (and ctrl+q): the same safe stop as q, never an abandoned run."""
        self.action_stop()

    def action_pause(self) -> None:
        if self.running.is_set():
            self.running.clear()
            self.query_one(EventLog).add_line("paused: training waits before its next step", "yellow")
        else:
            self.state.reset_rate()  # the paused time must not count in the ETA
            self.running.set()
            self.query_one(EventLog).add_line("resumed")
        self._pending.add(HEADER)
        self._redraw_pending(now=True)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return self.job is not None and not self._job_done and not self.stop_requested.is_set()
        return True

    # -- rendering ----------------------------------------------------------------------------------------
    @property
    def exit_code(self) -> int:
        if self.error is None:
            return 0
        return self.error.exit_code if isinstance(self.error, CompressorError) else 1

    @property
    def status(self) -> str:
        finished = self.state.finished
        if self.error is not None:
            return "failed"
        if finished is not None and (self.job is None or self._job_done):
            return "stopped" if finished.stopped_early else "finished"
        if self.job is None:
            return "following" if self.follow else "replay"
        if self.stop_requested.is_set() or self.external_stop():
            return "stopping"
        if not self.running.is_set():
            return "paused"
        return "running" if self.state.started is not None else "waiting"

    def _status_detail(self) -> str:
        status = self.status
        if status == "stopping":
            return "after this step…"
        if status in ("finished", "stopped", "failed") and self.job is not None:
            return "· q closes"
        if status == "following" and self.metrics is not None:
            return self.metrics.parent.name
        return ""

    def _show(self, changed: set[str]) -> None:
        state = self.state
        if HEADER in changed:
            self.query_one(RunHeader).show(state, self.status, self._status_detail())
        if CURVES in changed:
            points = state.curve_points()
            for plot in self.query(CurvePlot):
                plot.show(points)
        if LAYERS in changed:
            self.query_one(LayerTable).show(state.layers, state.layers_note)
        if OPTIMIZER in changed:
            self.query_one(OptimizerPanel).show(state)
        if RELIABILITY in changed:
            last = state.last_epoch
            ece = (last.eval or {}).get("ece") if last is not None else None
            bma = (last.bma or {}).get("reliability") if last is not None else None
            self.query_one(ReliabilityPlot).show(state.reliability, ece, bma)


class TrainOutcome(NamedTuple):
    run_dir: Path
    stopped: bool
    final_line: str | None  # the log's last word on the run (finished/stopped line), for after the app closes


def train_with_dashboard(job: Job, external_stop: Callable[[], bool],
                         resume_hint: Callable[[Path], str] | None = None) -> TrainOutcome:
    """Run `job` under the dashboard; a training error is re-raised once the terminal is restored, so the CLI
    prints it and exits with its code exactly as without the dashboard. However the app closed, the training
    thread was told to stop after its step; its checkpoint is awaited here."""
    app = Dashboard(job=job, external_stop=external_stop, resume_hint=resume_hint)
    app.run()
    app.stop_requested.set()
    app.running.set()
    if app.job_started.is_set():
        app.job_finished.wait()
    if app.error is not None:
        raise app.error
    if app.run_dir is None:
        where = f" ({app.state.started.run_dir})" if app.state.started is not None else ""
        raise CompressorError(f"the dashboard closed before training ended; resume from the run directory{where}")
    return TrainOutcome(app.run_dir, *final_words(app.run_dir))


def final_words(run_dir: Path) -> tuple[bool, str | None]:
    """(stopped early, the run's last line) read back from metrics.jsonl: what the screen showed last is
    gone with it, and events posted after the app closed never reached it."""
    narrator = Narrator()
    for event in MetricsTail(run_dir / "metrics.jsonl").read_new():
        narrator.line(event)
    finished = narrator.finished
    return finished is None or finished.stopped_early, narrator.final


def view_run(run_dir: Path, follow: bool) -> None:
    """`compressor dashboard RUN_DIR`: replay a run's metrics.jsonl, following appended lines if asked."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no metrics.jsonl)")
    app = Dashboard(metrics=metrics, follow=follow)
    app.run()
    if app.error is not None:
        raise app.error
