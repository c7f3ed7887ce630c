"""Console progress: a rich progress bar on a terminal, plain lines when stdout is not a TTY."""

from __future__ import annotations

import sys
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from compressor.events import (
    EpochEnd,
    EStep,
    Event,
    Log,
    Pruned,
    RunFinished,
    RunStarted,
    SampleCollected,
    StepDone,
)


def epoch_line(e: EpochEnd) -> str:
    ev = e.eval
    line = (f"epoch {e.epoch}/{e.epochs}  loss {e.train_loss:.4f}  acc {100 * ev['accuracy']:.2f}%  "
            f"nll {ev['nll']:.4f}  ece {ev['ece']:.4f}  brier {ev['brier']:.4f}  "
            f"channels pruned {100 * e.sparsity['channel_sparsity']:.1f}%  "
            f"MACs {e.sparsity['macs'] / 1e6:.2f}M  {e.images_per_second:.0f} img/s")
    if e.bma:
        line += f"  | BMA({e.bma['samples']}) acc {100 * e.bma['accuracy']:.2f}% nll {e.bma['nll']:.4f}"
    return line


def event_line(event: Event) -> str | None:
    """One human line per noteworthy event (step events excluded)."""
    if isinstance(event, RunStarted):
        verb = "resuming" if event.resumed else "training"
        return (f"{verb} {event.model} on {event.dataset} ({event.n_train} train / {event.n_val} eval) with "
                f"{event.method} on {event.device}: {event.epochs} epochs x {event.steps_per_epoch} steps; "
                f"run dir {event.run_dir}")
    if isinstance(event, EpochEnd):
        return epoch_line(event)
    if isinstance(event, Pruned):
        return (f"pruned {event.newly_pruned} channel groups ({event.pruned_groups}/{event.total_groups} total, "
                f"channel sparsity {100 * event.channel_sparsity:.1f}%) {event.reason}")
    if isinstance(event, EStep):
        spiked = (f"{event.spiked}/{event.total_groups} groups on the spike "
                  f"({100 * event.spike_cost_fraction:.1f}% of cost)")
        if event.rule == "evidence":
            return f"E-step (evidence): mean p* {event.pi:.3f}, {event.uncertain} groups unsure, {spiked}"
        return f"E-step: pi {event.pi:.3f}, {spiked}"
    if isinstance(event, SampleCollected):
        return f"posterior sample {event.samples} collected; BMA acc {100 * event.bma['accuracy']:.2f}%"
    if isinstance(event, Log):
        return f"[{event.level}] {event.message}"
    if isinstance(event, RunFinished):
        s = event.summary
        return (f"finished: acc {100 * (s['accuracy'] or 0):.2f}%  ece {s['ece'] or 0:.4f}  "
                f"MACs {s['macs'] / 1e6:.2f}M of {s['macs_dense'] / 1e6:.2f}M  "
                f"{s['train_images_per_second']:.0f} img/s")
    return None


class ConsoleSink:
    """Callable event sink; use as a context manager so the progress bar is torn down cleanly."""

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.console = Console(file=sys.stderr if self.tty else sys.stdout, highlight=False)
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> Self:
        if self.tty:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted) and self.progress is not None:
            total = event.epochs * event.steps_per_epoch
            self.task = self.progress.add_task("train", total=total, info="",
                                               completed=event.start_epoch * event.steps_per_epoch)
        if isinstance(event, StepDone):
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, completed=event.global_step,
                                     description=f"epoch {event.epoch + 1}",
                                     info=f"loss {event.loss:.3f} acc {100 * event.accuracy:.1f}% "
                                          f"{event.images_per_second:.0f} img/s")
            return
        line = event_line(event)
        if line is not None:
            if self.progress is not None:
                self.progress.console.print(line, markup=False)
            else:
                print(line, flush=True)


def print_metrics(result: dict[str, Any]) -> None:
    console = Console(highlight=False)
    table = Table(title=result.get("title", "evaluation"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "nll", "ece", "brier", "n"):
        if key in result:
            value = result[key]
            table.add_row(key, f"{100 * value:.2f} %" if key == "accuracy" else f"{value:.4f}"
                          if isinstance(value, float) else str(value))
    console.print(table)
