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


TAU = ("tau_mean", "tau_min", "tau_max")


def tau_row(opt: dict[str, Any]) -> dict[str, str]:
    """τ as one row: its value when every weight shares it (the usual case), else mean and range."""
    mean = opt.get("tau_mean")
    low, high = opt.get("tau_min", mean), opt.get("tau_max", mean)
    if mean is None or low is None or high is None:
        return {LABELS[k]: fmt(opt[k]) for k in TAU if k in opt}
    if high - low <= 1e-3 * max(abs(mean), 1e-12):
        return {"τ (every weight)": fmt(mean)}
    return {"τ mean (min–max)": f"{mean:.4g} ({low:.3g}–{high:.3g})"}


def estep_rows(state: RunState) -> dict[str, str]:
    """The E-step's headline number named for what it is: the evidence rule's mean slab probability p*, or
    the paper rule's π, which a pruning target sets (the recipe's `method.pi` is then only its start)."""
    e = state.estep
    assert e is not None
    recipe = state.started.recipe if state.started is not None else {}
    target = (recipe.get("prune") or {}).get("target")
    method = recipe.get("method") or {}
    if e.rule == "evidence":
        rows = {"E-step mean p*": f"{e.pi:.3g}", "groups unsure": str(e.uncertain)}
    elif target is not None:
        rows = {"E-step π, set by the budget": f"{e.pi:.3g}"}
    elif method.get("update_pi"):
        rows = {"E-step π, learned": f"{e.pi:.3g}"}
    else:
        rows = {"E-step π (method.pi)": f"{e.pi:.3g}"}
    rows["groups on spike"] = f"{e.spiked}/{e.total_groups}"
    return rows


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
            if key in TAU:
                values.update(tau_row(opt))
            elif key not in SHOWN_ELSEWHERE:
                values[LABELS.get(key, key)] = fmt(value)
        samples = max(state.samples, int(opt.get("samples", 0)))
        if samples or "samples" in opt or "cycle" in opt:
            values["samples collected"] = str(samples)
        if state.estep is not None:
            values.update(estep_rows(state))
        self.values = values
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        for key, value in values.items():
            table.add_row(key, Text(value, style="bold"))
        # The grid fixes this panel's size, so no re-layout of the screen is needed.
        self.update(table if values else Text("waiting for the run to start…", style="dim"), layout=False)
