"""`compressor compare`: several methods trained under one budget and one target, then one leaderboard.

Every method gets the recipe's model, data and train sections and the same epoch split (`prune.target_epoch`:
dense training before, fine-tuning after, for the one-shot schemes). `--target` is the fraction to remove: of
the measured MACs for structured methods, of the conv/linear weights for unstructured ones; dense methods
train without one. A method's hyperparameters: its defaults, then the fields it shares with the recipe's
method section (all of them when the names match; an SGD-based baseline takes an `sgd` section's lr/momentum/
weight decay/schedule, `avb` takes `emmcmc`'s optimizer fields and vice versa), then `--method-set`
overrides, where `sgd:KEY=VALUE` reaches every SGD-based baseline and `avb:KEY=VALUE` reaches emmcmc too.

Layout: `<out>/compare-<stamp>/` holds compare.json (the settings), runs/<method>-s<seed>-<stamp>/ (ordinary
run directories), exports/ (verified ONNX exports with latency reports, structured methods only),
leaderboard.json and leaderboard.md (rewritten after each run, so an interrupted compare leaves a valid
partial leaderboard) and the PNG plots (drawn when the compare ends or is stopped). Re-invoking on the same
folder reuses every run whose stored recipe equals the one it would train (finished: kept; interrupted:
resumed from its checkpoint).
"""

from __future__ import annotations

from compressor.compare.console import ConsoleReporter
from compressor.compare.leaderboard import METRICS, aggregate, markdown, run_metrics, table, write_board
from compressor.compare.plan import (
    DEFAULT_METHODS,
    CompareOptions,
    method_configs,
    method_kind,
    method_recipe,
    method_section,
    plan_runs,
)
from compressor.compare.plots import pareto_front, plot
from compressor.compare.runner import (
    MANIFEST,
    CompareResult,
    RunEvent,
    compare_folder,
    export_report,
    find_run,
    run_compare,
)

__all__ = [
    "DEFAULT_METHODS",
    "MANIFEST",
    "METRICS",
    "CompareOptions",
    "CompareResult",
    "ConsoleReporter",
    "RunEvent",
    "aggregate",
    "compare_folder",
    "export_report",
    "find_run",
    "markdown",
    "method_configs",
    "method_kind",
    "method_recipe",
    "method_section",
    "pareto_front",
    "plan_runs",
    "plot",
    "run_compare",
    "run_metrics",
    "table",
    "write_board",
]
