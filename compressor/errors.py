"""One error hierarchy: every expected failure becomes a one-line message and a distinct exit code."""

from __future__ import annotations


class CompressorError(Exception):
    """Base class; `exit_code` is what the CLI exits with after printing the one-line message."""

    exit_code = 1


class RecipeError(CompressorError):
    """A recipe (or --set override) is invalid. Carries one message per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(CompressorError):
    """Data files are missing, malformed or inconsistent (raised before training starts)."""

    exit_code = 2


class RunDirError(CompressorError):
    """A run directory or checkpoint is missing, unreadable, corrupt or not writable."""

    exit_code = 3


class ExportError(CompressorError):
    """Export or its verification failed; the output file is not left behind as if good."""

    exit_code = 4


class TrainingDiverged(CompressorError):
    """Loss or parameters became NaN/inf."""

    exit_code = 5
