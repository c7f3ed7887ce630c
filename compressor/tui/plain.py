"""`compressor dashboard` without a terminal (or with --no-tui): a run's metrics.jsonl as the plain lines
`train --no-tui` prints, then where the run stands; `--follow` keeps printing appended lines until the run
finishes. No Textual here: a server's log file or a pipe gets text, and the command always ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from compressor.sinks.console import Narrator, resume_command
from compressor.tui.source import MetricsTail

POLL_SECONDS = 0.5


def status_line(narrator: Narrator, run_dir: Path, follow: bool) -> str | None:
    """Where the run stands after its last record (None when its last line already says it)."""
    if narrator.finished is not None:
        if narrator.finished.stopped_early:
            return f"resume with: {resume_command(run_dir)}"
        return None
    started = narrator.started
    if started is None:
        return "no run has started in this directory yet"
    step, evaluated = narrator.step, narrator.evaluation
    if step is not None and (evaluated is None or step.epoch >= evaluated.epoch):
        where = f"epoch {step.epoch + 1} of {started.epochs}, step {step.step}"
    elif evaluated is not None:
        where = f"the end of epoch {evaluated.epoch} of {started.epochs}"
    else:
        where = "its start"
    last = (f"; last evaluation (epoch {evaluated.epoch}): acc {100 * evaluated.eval['accuracy']:.2f}%"
            if evaluated is not None else "")
    tail = "" if follow else " (--follow keeps reading until it finishes)"
    return f"in progress or interrupted at {where}{last}{tail}"


def print_run(run_dir: Path, follow: bool, should_stop: Callable[[], bool],
              write: Callable[[str], None]) -> None:
    """Write one line per recorded event, following appended ones if asked, then the run's status."""
    tail = MetricsTail(run_dir / "metrics.jsonl")
    narrator = Narrator()

    def emit() -> None:
        for event in tail.read_new():
            line = narrator.line(event)
            if line is not None:
                write(line)

    emit()
    while follow and narrator.finished is None and not should_stop():
        time.sleep(POLL_SECONDS)
        emit()
    status = status_line(narrator, run_dir, follow)
    if status is not None:
        write(status)
