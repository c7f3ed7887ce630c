"""Reading a run's metrics.jsonl incrementally, for replay and for following a run another process writes."""

from __future__ import annotations

import json
from pathlib import Path

from compressor.events import Event, event_from_record


class MetricsTail:
    """Remembers how far it has read, so each poll costs only the appended bytes; a half-written last line
    (the writer is mid-flush) is held back until its newline arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        events = []
        for line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            event = event_from_record(record) if isinstance(record, dict) else None
            if event is not None:
                events.append(event)
        return events
