"""Log pane: one line per noteworthy event, worded as on the plain console so both outputs read the same."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from compressor.engine.events import (
    EpochEnd,
    EStep,
    Event,
    Log,
    Pruned,
    RunFinished,
    SampleCollected,
    StepDone,
)
from compressor.sinks.console import event_line

STYLES: dict[type[Event], str] = {Pruned: "magenta", EStep: "blue", SampleCollected: "cyan", EpochEnd: "",
                                  RunFinished: "bold green"}
LEVEL_STYLES = {"warning": "bold yellow", "error": "bold red", "info": ""}


class EventLog(RichLog):
    """Keeps the last lines only: a long run's log must not grow the UI's memory without bound."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel", max_lines=2000, wrap=True, markup=False, highlight=False)
        self.border_title = "log"

    def add_event(self, event: Event, live: bool) -> None:
        if isinstance(event, StepDone):
            return
        line = event_line(event)
        if line is None:
            return
        style = LEVEL_STYLES.get(event.level, "") if isinstance(event, Log) else STYLES.get(type(event), "")
        self.add_line(line, style, live)

    def add_line(self, line: str, style: str = "", live: bool = True) -> None:
        text = Text(time.strftime("%H:%M:%S ") if live else "", style="dim")
        text.append(line, style=style)
        self.write(text)
