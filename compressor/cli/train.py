"""`compressor train`: progress on stderr (or the dashboard on a terminal), the run directory last on stdout,
and one exit code per outcome: 0 finished, 130/143 stopped early (Ctrl-C, `q` or quitting the dashboard /
SIGTERM), or the error's own code."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from compressor.cli import common
from compressor.cli.common import DeviceOpt, SetOpt, StopFlag, app, check_device, fail, friendly_errors
from compressor.events import Event


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file (not read with --resume)")],
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder that receives the run directory "
                                      "<name>-<timestamp>/")] = Path("runs"),
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="run name (default: the recipe's name)")] = None,
    device: DeviceOpt = "auto",
    no_tui: Annotated[bool, typer.Option("--no-tui", help="plain progress lines on stderr instead of the "
                                         "dashboard")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="RUN_DIR",
                                                help="continue this run directory with its own recipe")] = None,
) -> None:
    """Train a recipe. Progress goes to stderr; the last line on stdout is the run directory."""
    from compressor.cli.hints import dataset_of

    with friendly_errors(dataset=lambda: dataset_of(recipe, set_ or [])):
        check_device(device)
        if resume is not None:
            if not any((resume / "checkpoints" / f).is_file() for f in ("last.pt", "previous.pt")):
                fail(f"{resume}: no checkpoint to resume (expected {resume / 'checkpoints' / 'last.pt'})", 3)
            rec = None
        else:
            from compressor.cli.hints import switch_method
            from compressor.recipe import load_recipe

            overrides = switch_method(recipe, set_ or [], note=lambda line: typer.echo(line, err=True))
            rec = load_recipe(recipe, overrides)
            if name:
                rec.name = name
        from compressor.engine.distributed import launcher, process_rank
        from compressor.engine.trainer import run
        from compressor.sinks.console import ConsoleSink

        main = process_rank() == 0  # under torchrun only rank 0 prints; the engine keeps the others silent
        dev = None if device == "auto" else device

        def job(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
            return run(rec, on_event, should_stop, out_dir=out, device=dev, resume=resume)

        if main and common.interactive() and not no_tui:
            from compressor.tui.app import train_with_dashboard

            with StopFlag(quiet=True) as stop:  # the dashboard shows the stop; an echo would tear its screen
                outcome = train_with_dashboard(job, stop, resume_hint=lambda d: f"{launcher()} train {recipe} "
                                                                               f"--resume {d}")
            run_dir, stopped = outcome.run_dir, outcome.stopped
            if outcome.final_line:  # the dashboard is gone: its last word stays on the terminal
                typer.echo(outcome.final_line, err=True)
        else:
            sink = ConsoleSink() if main else None
            with StopFlag(quiet=not main) as stop, sink or nullcontext():
                run_dir = run(rec, sink, stop, out_dir=out, device=dev, resume=resume)
            stopped = sink.stopped if sink is not None else stop.signum is not None
        if not main:
            raise typer.Exit(stop.exit_code if stopped else 0)
        if stopped:
            typer.echo(f"stopped; resume with: {launcher()} train {recipe} --resume {run_dir}", err=True)
            typer.echo(str(run_dir))
            raise typer.Exit(stop.exit_code)
        typer.echo(str(run_dir))
