"""Log pane: one line per noteworthy event, worded as on the plain console so both outputs read the same."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual import events
from textual.widgets import RichLog

from compressor.events import (
    EpochEnd,
    EStep,
    Event,
    Log,
    Pruned,
    RunFinished,
    SampleCollected,
)
from compressor.sinks.console import Narrator

STYLES: dict[type[Event], str] = {Pruned: "magenta", EStep: "blue", SampleCollected: "cyan", EpochEnd: "",
                                  RunFinished: "bold green"}
LEVEL_STYLES = {"warning": "bold yellow", "error": "bold red", "info": ""}
MAX_LINES = 2000


class EventLog(RichLog):
    """Lines are queued and written by `flush` when the app redraws its panels: each write re-lays the screen out.
    RichLog wraps a line once, at the width it has when written; the panel's width changes with the terminal
    (and with the layout breakpoint right after start), so the entries are kept and re-wrapped on resize."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel", max_lines=MAX_LINES, min_width=10, wrap=True, markup=False,
                         highlight=False)
        self.border_title = "log"
        self.entries: deque[Text] = deque(maxlen=MAX_LINES)
        self._unwritten: list[Text] = []
        self._wrapped_at = 0
        self.narrator = Narrator()  # a stopped run's last line needs the steps and evaluations before it

    def add_event(self, event: Event, live: bool) -> None:
        line = self.narrator.line(event)
        if line is None:
            return
        style = LEVEL_STYLES.get(event.level, "") if isinstance(event, Log) else STYLES.get(type(event), "")
        self.add_line(line, style, live)

    def add_line(self, line: str, style: str = "", live: bool = True) -> None:
        text = Text(time.strftime("%H:%M:%S ") if live else "", style="dim")
        text.append(line, style=style)
        self.entries.append(text)
        self._unwritten.append(text)

    @property
    def unwritten(self) -> bool:
        return bool(self._unwritten)

    def flush(self) -> None:
        for text in self._unwritten[-MAX_LINES:]:
            self.write(text)
        self._unwritten.clear()

    def on_resize(self, event: events.Resize) -> None:
        width = self.scrollable_content_region.width
        if width != self._wrapped_at:
            self._wrapped_at = width
            self.clear()
            self._unwritten.clear()
            for text in self.entries:
                self.write(text)
