"""The Typer app and what every command shares: one-line errors with distinct exit codes, the stop flag for
SIGINT/SIGTERM, and whether stdout is a terminal. Heavy imports (torch, textual) happen inside commands so
`compressor --help` stays fast."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Self

import typer

from compressor.errors import CompressorError, RecipeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: `--no-tui` rather than `--no-tui <bool>`
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train neural networks the Bayesian way and prune them structurally in the same run.",
)

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
INTERRUPTED = 128 + signal.SIGINT  # 130: a run stopped early by the user (Ctrl-C, q, the dashboard's quit)

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="override a recipe key, YAML-typed (repeatable): --set train.epochs=5")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="where to compute")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"compressor {version('compressor')}")
        except PackageNotFoundError:
            typer.echo("compressor (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Train neural networks the Bayesian way and prune them structurally in the same run."""


def interactive() -> bool:
    """Whether stdout is a terminal a full-screen dashboard can take over."""
    return sys.stdout.isatty()


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}" if "\n" not in message else message, err=True)
    raise typer.Exit(code)


def check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device: expected auto, cpu or cuda, got '{device}'", 2)


@contextmanager
def friendly_errors(dataset: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Expected failures become one line per problem and a distinct exit code — never a traceback.
    `dataset` names the recipe's dataset for hints that depend on it (read only when a recipe failed)."""
    try:
        yield
    except CompressorError as exc:
        lines = getattr(exc, "problems", None) or [str(exc)]
        if isinstance(exc, RecipeError):
            from compressor.cli.hints import explain_all

            lines = explain_all(lines, dataset() if dataset is not None else None)
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None
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

    @property
    def exit_code(self) -> int:
        """What a run stopped early exits with: 128 + the signal, or 130 for a stop asked in the dashboard."""
        return 128 + self.signum if self.signum is not None else INTERRUPTED
