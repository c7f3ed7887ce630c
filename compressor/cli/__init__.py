"""`compressor` command line: the Typer app and one module per group of commands. Heavy imports (torch,
textual) happen inside the commands, so `compressor --help` stays fast."""

from __future__ import annotations

import sys

from compressor.cli import ship, train, view
from compressor.cli.common import RECIPES_DIR, StopFlag, app, friendly_errors

__all__ = ["RECIPES_DIR", "StopFlag", "app", "friendly_errors", "main", "ship", "train", "view"]


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
