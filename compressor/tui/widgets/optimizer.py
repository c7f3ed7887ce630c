"""Optimizer panel: whatever diagnostics the method reports, so new methods show up without UI changes."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from compressor.tui.state import RunState

# Friendlier names for keys the Bayesian methods report; any other key is shown as it is.
LABELS = {"temperature": "temperature", "t_eff": "T eff", "tau_mean": "τ mean", "tau_min": "τ min",
          "tau_max": "τ max", "cycle": "cycle"}


def fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


class OptimizerPanel(Static):
    """Two-column key/value table."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "optimizer"
        self.values: dict[str, str] = {}

    def show(self, state: RunState) -> None:
        values: dict[str, str] = {}
        if state.started is not None:
            values["method"] = state.started.method
        if state.lr is not None:
            values["learning rate C2"] = f"{state.lr:.4g}"
        for key, value in state.optimizer.items():
            values[LABELS.get(key, key)] = fmt(value)
        if state.samples or "cycle" in state.optimizer:
            values["samples collected"] = str(state.samples)
        if state.estep is not None:
            e = state.estep
            values["E-step π"] = f"{e.pi:.3f}"
            values["groups on spike"] = f"{e.spiked}/{e.total_groups}"
        self.values = values
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        for key, value in values.items():
            table.add_row(key, Text(value, style="bold"))
        self.update(table if values else Text("waiting for the run to start…", style="dim"))
