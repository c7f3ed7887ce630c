"""`compressor dashboard`, `compressor eval` and `compressor recipes`: looking at runs and recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from compressor.cli import common
from compressor.cli.common import (
    RECIPES_DIR,
    DeviceOpt,
    SetOpt,
    StopFlag,
    app,
    check_device,
    fail,
    friendly_errors,
)


@app.command()
def dashboard(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="run directory")],
    follow: Annotated[bool | None, typer.Option("--follow/--no-follow", show_default=False,
                                                help="keep reading what a live run appends to metrics.jsonl "
                                                "(default: on in the dashboard, off for plain lines)")] = None,
    no_tui: Annotated[bool, typer.Option("--no-tui", help="print the run as plain lines and exit (the default "
                                         "when stdout is not a terminal)")] = False,
) -> None:
    """Open the dashboard on a run's metrics.jsonl: replay a finished run, or follow one still training.
    Without a terminal (or with --no-tui) the run is printed as plain lines instead."""
    with friendly_errors():
        from compressor.errors import RunDirError

        if not (run_dir / "metrics.jsonl").is_file():
            raise RunDirError(f"{run_dir}: not a run directory (no metrics.jsonl)")
        if no_tui or not common.interactive():
            from compressor.tui.plain import print_run

            with StopFlag(quiet=True) as stop:
                print_run(run_dir, bool(follow), stop, typer.echo)
            if stop.signum is not None:
                raise typer.Exit(stop.exit_code)
            return
        from compressor.tui.app import view_run

        view_run(run_dir, follow=follow is not False)


def _json_ready(result: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in result.items() if key != "title"}
    out["source"] = result.get("title", "")
    return out


@app.command("eval")
def eval_(
    target: Annotated[Path, typer.Argument(metavar="RUN_DIR|MODEL.pt|MODEL.onnx",
                                           help="a run directory, or a file written by `compressor export`")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", metavar="last|best|sample-K",
                                            help="which weights of a run directory")] = "last",
    no_bma: Annotated[bool, typer.Option("--no-bma", help="skip the posterior samples' average")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON object")] = False,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Accuracy, NLL, ECE and Brier on the evaluation split: a run's checkpoint and, when the run collected
    posterior samples, their Bayesian model average (BMA); or an exported .pt or .onnx file (onnxruntime)."""
    with friendly_errors():
        check_device(device)
        if target.suffix == ".onnx":
            if checkpoint != "last":
                fail(f"--checkpoint {checkpoint}: an ONNX file holds one graph; --checkpoint applies to run "
                     "directories", 2)
            from compressor.export.evaluate import evaluate_onnx

            result = evaluate_onnx(target, set_ or [])
        else:
            from compressor.engine.evaluate import evaluate_run

            result = evaluate_run(target, set_ or [], device, checkpoint=checkpoint, bma=not no_bma)
        if as_json:
            typer.echo(json.dumps(_json_ready(result), indent=2))
            return
        from compressor.sinks.console import print_metrics

        print_metrics(result)


@app.command()
def recipes(
    models: Annotated[bool, typer.Option("--models", help="list the registered models instead")] = False,
) -> None:
    """List the bundled recipes, one line each (or the registered models with --models)."""
    if models:
        from compressor.models import list_models, model_options

        for name in list_models():
            options = ", ".join(sorted(model_options(name)))
            typer.echo(f"{name:<14} {'options: ' + options if options else ''}".rstrip())
        return
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        typer.echo(f"{path.relative_to(RECIPES_DIR.parent)!s:<36} {desc}")
