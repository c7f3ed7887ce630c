"""Top bar: what is being trained where, and how far along it is."""

from __future__ import annotations

from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from compressor.tui.state import RunState

STATUS_STYLE = {"running": "bold green", "paused": "bold yellow", "stopping": "bold yellow", "finished": "bold cyan",
                "stopped": "bold yellow", "failed": "bold red", "following": "bold green", "replay": "bold cyan",
                "waiting": "dim"}


def duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunHeader(Static):
    """Two lines: identity of the run, then epoch/step, a progress bar, ETA, throughput and status."""

    DEFAULT_CSS = """
    RunHeader { height: 2; background: $panel; padding: 0 1; }
    """

    def show(self, state: RunState, status: str, detail: str = "") -> None:
        s = state.started
        title = Text()
        if s is None:
            title.append("waiting for the run to start…", style="dim")
        else:
            title.append(s.name, style="bold")
            title.append(f"  {s.model} · {s.dataset} · {s.method} · {s.device}")
            title.append(f"  {s.n_train} train / {s.n_val} eval", style="dim")
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_column(no_wrap=True, justify="right")
        total = max(1, state.total_steps)
        where = Text(f"epoch {state.epoch}/{s.epochs if s else 0}  step {state.global_step}/{state.total_steps}")
        eta = state.eta_seconds if status in ("running", "following") else None
        right = Text(f"{100 * state.global_step / total:3.0f}%")
        right.append(f"  ETA {duration(eta)}" if eta is not None else "  ETA –")
        if state.lr is not None:
            right.append(f"  lr {state.lr:.3g}")
        if state.images_per_second is not None:
            right.append(f"  {state.images_per_second:,.0f} img/s")
        right.append(f"  {status}", style=STATUS_STYLE.get(status, "bold"))
        if detail:
            right.append(f" {detail}", style="dim")
        grid.add_row(where, ProgressBar(total=total, completed=state.global_step), right)
        outer = Table.grid(expand=True)
        outer.add_row(title)
        outer.add_row(grid)
        self.update(outer, layout=False)  # fixed height: skip the full-screen re-layout
