"""Console progress on stderr (a rich progress bar on a terminal, plain lines otherwise), so stdout carries only
what scripts capture (the run directory); and the wording of events that the dashboard's log shares."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
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
    event_from_record,
)

# The trainer's log line when a stop request is honoured ("stopped at epoch 2 step 13; checkpoint written").
_STOP_LOG = re.compile(r"stopped at epoch (\d+) step (\d+)")


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
    """One human line per noteworthy event (step events excluded). A stopped run's last line needs what came
    before it: `Narrator` words that one."""
    if isinstance(event, RunStarted):
        verb = "resuming" if event.resumed else "training"
        shape = f", input {'x'.join(map(str, event.input_shape))}" if event.input_shape else ""
        return (f"{verb} {event.model} on {event.dataset} ({event.n_train} train / {event.n_val} eval{shape}) with "
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
        return finished_line(event)
    return None


def finished_line(event: RunFinished) -> str:
    s = event.summary
    line = (f"finished: acc {100 * (s.get('accuracy') or 0):.2f}%  ece {s.get('ece') or 0:.4f}  "
            f"MACs {s['macs'] / 1e6:.2f}M of {s['macs_dense'] / 1e6:.2f}M  "
            f"{s['train_images_per_second']:.0f} img/s")
    bma = s.get("bma") or {}
    if bma.get("accuracy") is not None:
        line += f"  | BMA({bma.get('samples')}) acc {100 * bma['accuracy']:.2f}% ece {bma.get('ece') or 0:.4f}"
    return line


def resume_command(run_dir: str | Path, recipe: str | Path | None = None, launcher: str = "compressor") -> str:
    """The command that continues a run (the recipe argument is not read when resuming: the run's own is)."""
    return f"{launcher} train {recipe or Path(run_dir) / 'recipe.yaml'} --resume {run_dir}"


def last_evaluation(metrics: Path) -> EpochEnd | None:
    """The last epoch record of a run's metrics.jsonl (what a resumed run evaluated before this process)."""
    last = None
    try:
        with open(metrics, encoding="utf-8") as fh:
            for raw in fh:
                if '"event": "epoch"' not in raw:
                    continue
                try:
                    event = event_from_record(json.loads(raw))
                except json.JSONDecodeError:
                    continue
                last = event if isinstance(event, EpochEnd) else last
    except OSError:
        return None
    return last


class Narrator:
    """Event lines with memory: a stopped run's last line says where it stopped and shows the last real
    evaluation (of this process, or read back from the run's metrics.jsonl after a resume), never the
    zeros of a summary that has none."""

    def __init__(self) -> None:
        self.started: RunStarted | None = None
        self.step: StepDone | None = None
        self.evaluation: EpochEnd | None = None
        self.stopped_at: tuple[int, int] | None = None  # (1-based epoch, step in it)
        self.finished: RunFinished | None = None
        self.final: str | None = None
        self.last_estep: str | None = None

    def line(self, event: Event) -> str | None:
        if isinstance(event, StepDone):
            self.step = event
            return None
        if isinstance(event, RunStarted):
            self.started, self.finished, self.final, self.stopped_at = event, None, None, None
            if event.resumed and self.evaluation is None:
                self.evaluation = last_evaluation(Path(event.run_dir) / "metrics.jsonl")
        elif isinstance(event, EpochEnd):
            self.evaluation = event
        elif isinstance(event, Log) and (match := _STOP_LOG.search(event.message)):
            self.stopped_at = (int(match.group(1)), int(match.group(2)))
        elif isinstance(event, RunFinished):
            self.finished = event
            self.final = self.stopped_line() if event.stopped_early else finished_line(event)
            return self.final
        elif isinstance(event, EStep):  # once the removal is done, each epoch's E-step says the same
            line = event_line(event)
            repeated, self.last_estep = line == self.last_estep, line
            return None if repeated else line
        return event_line(event)

    def stopped_line(self) -> str:
        where = "stopped early"
        started = self.started
        if self.stopped_at is None and self.step is not None:
            self.stopped_at = (self.step.epoch + 1, self.step.step)
        if self.stopped_at is not None:
            epoch, step = self.stopped_at
            where = (f"stopped at epoch {epoch} of {started.epochs}, step {step} of {started.steps_per_epoch}"
                     if started is not None else f"stopped at epoch {epoch} step {step}")
        e = self.evaluation
        if e is None:
            return f"{where}, not finished; no evaluation yet (the first is at the end of epoch 1)"
        ev = e.eval or {}
        text = (f"{where}, not finished; last evaluation (epoch {e.epoch}): acc {100 * ev['accuracy']:.2f}%  "
                f"ece {ev['ece']:.4f}  MACs {e.sparsity['macs'] / 1e6:.2f}M")
        if e.bma:
            text += f"  | BMA({e.bma['samples']}) acc {100 * e.bma['accuracy']:.2f}%"
        return text


class ConsoleSink:
    """Callable event sink; use as a context manager so the progress bar is torn down cleanly. Everything
    goes to stderr: a bar when stderr is a terminal, plain lines otherwise."""

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.console = Console(file=sys.stderr, highlight=False)
        self.progress: Progress | None = None
        self.task: Any = None
        self.narrator = Narrator()

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

    @property
    def stopped(self) -> bool:
        """Whether the run ended before its last epoch (a stop request honoured)."""
        return self.narrator.finished is not None and self.narrator.finished.stopped_early

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted) and self.progress is not None:
            total = event.epochs * event.steps_per_epoch
            self.task = self.progress.add_task("train", total=total, info="",
                                               completed=event.start_epoch * event.steps_per_epoch)
        if isinstance(event, StepDone) and self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=event.global_step, description=f"epoch {event.epoch + 1}",
                                 info=f"loss {event.loss:.3f} acc {100 * event.accuracy:.1f}% "
                                      f"{event.images_per_second:.0f} img/s")
        line = self.narrator.line(event)
        if line is not None:
            if self.progress is not None:
                self.progress.console.print(line, markup=False)
            else:
                print(line, file=sys.stderr, flush=True)


def _metric(key: str, value: Any) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f} %" if key == "accuracy" else f"{value:.4f}"


def print_metrics(result: dict[str, Any]) -> None:
    """`compressor eval`'s table: the checkpoint (or model file) and, beside it, the posterior average."""
    console = Console(highlight=False)
    console.print(result.get("title", "evaluation"), markup=False)
    table = Table()
    table.add_column("metric")
    checkpoint = str(result.get("checkpoint") or "model")
    columns = [(f"checkpoint {checkpoint}" if checkpoint in ("last", "best") or checkpoint.startswith("sample")
                else checkpoint, result)]
    bma = result.get("bma")
    if bma:
        columns.append((f"BMA of {bma['samples']} sample{'s' if bma['samples'] != 1 else ''}", bma))
    for label, _ in columns:
        table.add_column(label, justify="right")
    for key in ("accuracy", "nll", "ece", "brier"):
        table.add_row(key, *(_metric(key, values.get(key)) for _, values in columns))
    table.add_row("examples", *(str(values.get("n", "–")) for _, values in columns))
    console.print(table)
