"""`compressor compare` on the terminal: run events prefixed with their method, and the leaderboard table."""

from __future__ import annotations

from typing import Any

from compressor.compare.leaderboard import table
from compressor.events import Event


class ConsoleReporter:
    """Run events as lines prefixed with their method, and the leaderboard reprinted as rows fill in."""

    def __init__(self) -> None:
        import sys

        from rich.console import Console

        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
        self.narrators: dict[str, Any] = {}

    def event(self, label: str, event: Event) -> None:
        from compressor.sinks.console import Narrator

        line = self.narrators.setdefault(label, Narrator()).line(event)
        if line is not None:
            self.console.print(f"[{label}] {line}", markup=False)

    def board(self, board: dict[str, Any]) -> None:
        self.console.print(table(board))
