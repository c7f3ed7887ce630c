"""Optimizer panel: whatever diagnostics the method reports, so new methods show up without UI changes."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from compressor.tui.state import RunState

# Friendlier names for keys the Bayesian methods report; any other key is shown as it is.
LABELS = {"temperature": "temperature", "t_eff": "T eff", "tau_mean": "τ mean", "tau_min": "τ min",
          "tau_max": "τ max", "cycle": "cycle", "steps": "optimizer steps"}
SHOWN_ELSEWHERE = {"c2", "samples"}  # folded into "learning rate C2" and "samples collected"


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
        opt = state.optimizer
        lr = state.lr if state.lr is not None else opt.get("c2")
        if lr is not None:
            values["learning rate C2"] = f"{lr:.4g}"
        for key, value in opt.items():
            if key not in SHOWN_ELSEWHERE:
                values[LABELS.get(key, key)] = fmt(value)
        samples = max(state.samples, int(opt.get("samples", 0)))
        if samples or "samples" in opt or "cycle" in opt:
            values["samples collected"] = str(samples)
        if state.estep is not None:
            e = state.estep
            values["E-step π"] = f"{e.pi:.3g}"
            values["groups on spike"] = f"{e.spiked}/{e.total_groups}"
        self.values = values
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        for key, value in values.items():
            table.add_row(key, Text(value, style="bold"))
        # The grid fixes this panel's size, so no re-layout of the screen is needed.
        self.update(table if values else Text("waiting for the run to start…", style="dim"), layout=False)
