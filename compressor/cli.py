"""`compressor` command line. Heavy imports (torch, textual) happen inside commands so --help stays fast."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, Self

import typer

from compressor.errors import CompressorError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train neural networks the Bayesian way and prune them structurally in the same run.",
)

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: KEY=VALUE (YAML-typed)")]


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}" if "\n" not in message else message, err=True)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Expected failures become one line per problem and a distinct exit code — never a traceback."""
    try:
        yield
    except CompressorError as exc:
        lines = getattr(exc, "problems", None) or [str(exc)]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except MemoryError:
        typer.echo("error: out of memory; lower train.batch_size or data.limit", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # the last line of defence: still one line, with how to get details
        if os.environ.get("COMPRESSOR_DEBUG"):
            raise
        typer.echo(f"error: internal error ({exc.__class__.__name__}: {exc}); "
                   "rerun with COMPRESSOR_DEBUG=1 for a traceback", err=True)
        raise typer.Exit(1) from None


class StopFlag:
    """SIGINT/SIGTERM ask the engine to stop after the current step; a second Ctrl-C aborts at once."""

    def __init__(self, quiet: bool = False) -> None:
        self.signum: int | None = None
        self.quiet = quiet  # data-parallel ranks other than 0 stop silently; rank 0 speaks for all
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if not self.quiet:
            typer.echo("\nstopping after this step (Ctrl-C again to abort without a checkpoint)…", err=True)

    def __enter__(self) -> Self:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="folder that receives the run directory")] = Path("runs"),
    name: Annotated[str | None, typer.Option("--name", help="run name (default: recipe name)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    no_tui: Annotated[bool, typer.Option("--no-tui", help="plain progress output instead of the dashboard")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue this run directory")] = None,
) -> None:
    """Train a recipe; the last line printed is the run directory."""
    with friendly_errors():
        from compressor.recipe import load_recipe

        if device not in ("auto", "cpu", "cuda"):
            fail(f"--device: expected auto, cpu or cuda, got '{device}'", 2)
        if resume is not None:
            if not any((resume / "checkpoints" / f).is_file() for f in ("last.pt", "previous.pt")):
                fail(f"{resume}: no checkpoint to resume (expected {resume / 'checkpoints' / 'last.pt'})", 3)
            rec = None
        else:
            rec = load_recipe(recipe, set_ or [])
            if name:
                rec.name = name
        from compressor.engine.distributed import launcher, process_rank
        from compressor.engine.trainer import run
        from compressor.sinks.console import ConsoleSink

        main = process_rank() == 0  # under torchrun only rank 0 prints; the engine keeps the others silent
        dev = None if device == "auto" else device
        if main and sys.stdout.isatty() and not no_tui:
            from compressor.tui.app import train_with_dashboard

            with StopFlag(quiet=True) as stop:  # the dashboard shows the stop; an echo would tear its screen
                outcome = train_with_dashboard(
                    lambda on_event, should_stop: run(rec, on_event, should_stop, out_dir=out, device=dev,
                                                      resume=resume), stop)
            run_dir = outcome.run_dir
            if outcome.stopped and stop.signum is None:  # `q` in the dashboard: a requested stop, exit 0
                typer.echo(f"stopped; resume with: {launcher()} train {recipe} --resume {run_dir}", err=True)
        else:
            sink = ConsoleSink() if main else None
            with StopFlag(quiet=not main) as stop, sink or nullcontext():
                run_dir = run(rec, sink, stop, out_dir=out, device=dev, resume=resume)
        if not main:
            raise typer.Exit(0 if stop.signum is None else 128 + stop.signum)
        if stop.signum is not None:
            typer.echo(f"stopped; resume with: {launcher()} train {recipe} --resume {run_dir}", err=True)
            typer.echo(str(run_dir))
            raise typer.Exit(128 + stop.signum)
        typer.echo(str(run_dir))


@app.command()
def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    follow: Annotated[bool, typer.Option("--follow/--no-follow",
                                         help="keep reading lines a live run appends to metrics.jsonl")] = True,
) -> None:
    """Open the dashboard on a run's metrics.jsonl: replay a finished run, or follow one still training."""
    with friendly_errors():
        from compressor.tui.app import view_run

        view_run(run_dir, follow=follow)


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    set_: SetOpt = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Evaluate a run's last checkpoint on its evaluation split (accuracy, NLL, ECE, Brier)."""
    with friendly_errors():
        from compressor.engine.evaluate import evaluate_run
        from compressor.sinks.console import print_metrics

        result = evaluate_run(run_dir, set_ or [], device)
        print_metrics(result)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    onnx: Annotated[bool, typer.Option("--onnx", help="export to ONNX (the only format so far)")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="ONNX file (default exports/<run-name>"
                                                "[-variant].onnx); the report and PyTorch model go beside it "
                                                "as .json and .pt")] = None,
    masked: Annotated[bool, typer.Option("--masked", help="keep the dense shapes, pruned weights zero")] = False,
    round_to: Annotated[int | None, typer.Option("--round-to", help="keep channel counts multiples of N by "
                                                 "restoring the strongest pruned channels")] = None,
    bma: Annotated[bool, typer.Option("--bma", help="one graph averaging the posterior samples' softmax "
                                      "(output `probs`)")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset, 13..20")] = 17,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="last | best | sample-K")] = "last",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing export")] = False,
    set_: SetOpt = None,
) -> None:
    """Export a run with its pruned channels removed, verify it against PyTorch and report size and speed."""
    with friendly_errors():
        if not onnx:
            fail("choose an export format: --onnx", 2)
        from compressor.export.pipeline import ExportOptions, export_run, option_problem
        from compressor.export.report import print_report

        opts = ExportOptions(run_dir=run_dir, output=output, masked=masked, round_to=round_to, bma=bma,
                             opset=opset, checkpoint=checkpoint, force=force, overrides=set_ or [])
        problem = option_problem(opts)
        if problem:
            fail(problem, 2)

        def progress(message: str) -> None:
            typer.echo(f"{message}…", err=True)

        report = export_run(opts, log=progress if sys.stderr.isatty() else None)
        print_report(report)
        typer.echo(report["onnx"])


@app.command()
def compare(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML giving model, data and train (its method "
                                                  "section seeds that method's settings)")] = None,
    methods: Annotated[str | None, typer.Option("--methods", help="comma-separated, e.g. emmcmc,l1_filter,sgd "
                                                "(default: all ten)")] = None,
    target: Annotated[float, typer.Option("--target", help="fraction to remove: of the MACs for structured "
                                          "methods, of the weights for unstructured ones")] = 0.5,
    set_: SetOpt = None,
    method_set: Annotated[list[str] | None, typer.Option("--method-set", help="NAME:KEY=VALUE for one method; "
                                                         "sgd: and avb: also reach the methods built on them")] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for compare-<stamp>/, or an existing compare "
                                      "folder to continue")] = Path("runs"),
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="seeds per method (mean ± std)")] = 1,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue this compare folder with the "
                                                "settings stored in it")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    no_export: Annotated[bool, typer.Option("--no-export", help="skip the ONNX export and latency of the "
                                            "structured methods")] = False,
) -> None:
    """Train several methods under one budget and target; write leaderboard.json/.md and plots (the last
    line printed is the compare folder). Finished runs in the folder are reused, interrupted ones resumed."""
    with friendly_errors():
        import json

        from compressor.compare import DEFAULT_METHODS, MANIFEST, CompareOptions, ConsoleReporter, run_compare

        if device not in ("auto", "cpu", "cuda"):
            fail(f"--device: expected auto, cpu or cuda, got '{device}'", 2)
        if resume is not None:
            if recipe is not None or methods is not None or set_ or method_set:
                fail("--resume takes every setting from the compare folder; drop RECIPE, --methods, --set and "
                     "--method-set", 2)
            if not (resume / MANIFEST).is_file():
                fail(f"{resume}: not a compare folder (no {MANIFEST})", 3)
            opts = CompareOptions.from_json(json.loads((resume / MANIFEST).read_text(encoding="utf-8")))
            out = resume
        elif recipe is None:
            fail("give a RECIPE (or --resume COMPARE_FOLDER)", 2)
        else:
            names = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(DEFAULT_METHODS)
            opts = CompareOptions(recipe=recipe, methods=names, target=target, overrides=set_ or [],
                                  method_overrides=method_set or [], seeds=seeds,
                                  device=None if device == "auto" else device, export=not no_export)
        reporter = ConsoleReporter()
        with StopFlag() as stop:
            result = run_compare(opts, out, on_event=reporter.event, on_board=reporter.board, should_stop=stop)
        for name, message in result.errors.items():
            typer.echo(f"error: {name}: {message}", err=True)
        if result.stopped:
            typer.echo(f"stopped; continue with: compressor compare --resume {result.folder}", err=True)
            typer.echo(str(result.folder))
            raise typer.Exit(128 + (stop.signum or signal.SIGINT))
        typer.echo(str(result.folder))
        if result.errors:
            raise typer.Exit(1)


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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
