"""Textual messages wrapping engine events (the toolong pattern: the engine knows nothing of Textual).

Step events arrive at the training loop's rate, so `StepProgress` lets a newer one replace an older one still
waiting in the queue: the screen shows the latest step instead of replaying every one.
"""

from __future__ import annotations

import time

from textual.message import Message

from compressor.events import Event, StepDone


class EngineEvent(Message):
    """One low-rate event from the training thread (run start, epoch end, prune, E-step, sample, log, finish)."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.at = time.monotonic()
        super().__init__()


class StepProgress(Message):
    """The newest StepDone; pending older ones are dropped (`can_replace`)."""

    def __init__(self, event: StepDone) -> None:
        self.event = event
        self.at = time.monotonic()
        super().__init__()

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepProgress)


class EventBatch(Message):
    """Records read from metrics.jsonl in one poll; `live` is False for the backlog read at start."""

    def __init__(self, events: list[Event], live: bool) -> None:
        self.events = events
        self.live = live
        self.at = time.monotonic()
        super().__init__()
