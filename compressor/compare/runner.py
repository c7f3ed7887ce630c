"""The compare loop: the compare folder, finding and reusing runs, training the rest, exporting the structured
ones and rewriting the leaderboard after each."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compressor.compare.leaderboard import Results, run_metrics, write_board
from compressor.compare.plan import CompareOptions, plan_runs
from compressor.errors import CompressorError
from compressor.events import Event
from compressor.recipe import Recipe, stored_recipe, validate_recipe
from compressor.storage.rundir import create_run_dir

MANIFEST = "compare.json"
RunEvent = Callable[[str, Event], None]
ShouldStop = Callable[[], bool]


@dataclass
class CompareResult:
    folder: Path
    board: dict[str, Any]
    stopped: bool
    errors: dict[str, str]


def _stored_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved recipe read through today's schema, so a key added since (with its default) does
    not make an upgraded compressor retrain finished runs; None when it is unreadable or no longer valid."""
    try:
        stored = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        return validate_recipe(stored_recipe(stored), where=str(run_dir / "recipe.yaml")).to_dict()
    except (OSError, yaml.YAMLError, CompressorError):
        return None


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def find_run(runs: Path, recipe: Recipe) -> tuple[Path | None, str]:
    """The newest run of exactly this recipe: ("done" | "resume", path), or (None, "new")."""
    wanted = recipe.to_dict()
    for run_dir in sorted(runs.glob(f"{recipe.name}-*"), reverse=True):
        if _stored_recipe(run_dir) != wanted:
            continue
        summary = _read_summary(run_dir)
        if summary is not None and summary.get("completed"):
            return run_dir, "done"
        if (run_dir / "checkpoints" / "last.pt").is_file():
            return run_dir, "resume"
    return None, "new"


def export_report(run_dir: Path, exports: Path, budget_s: float) -> dict[str, Any]:
    """The verified ONNX export of a structured run with its latency against the dense network (reused when
    already written: a report file only exists for an export that passed every check; one written before
    exports were timed robustly, without `timing`, is redone)."""
    from compressor.export.pipeline import ExportOptions, export_run

    report_path = exports / f"{run_dir.name}.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if "timing" in report:
            return report
    exports.mkdir(exist_ok=True)
    return export_run(
        ExportOptions(
            run_dir=run_dir, output=exports / f"{run_dir.name}.onnx", force=True, latency_budget_s=budget_s
        )
    )


def compare_folder(out: Path) -> Path:
    """`out` itself when it already is a compare folder (so a re-invocation resumes), else a fresh
    `out/compare-<stamp>`."""
    if (out / MANIFEST).is_file():
        return out
    return create_run_dir(out, "compare", checkpoints=False)


def _open_folder(opts: CompareOptions, out: Path) -> Path:
    """The compare folder with its compare.json (the settings, rewritten) and runs/ subfolder."""
    folder = compare_folder(out)
    (folder / MANIFEST).write_text(json.dumps(opts.to_json(), indent=2), encoding="utf-8")
    (folder / "runs").mkdir(exist_ok=True)
    return folder


def train_one(
    opts: CompareOptions,
    runs_dir: Path,
    name: str,
    recipe: Recipe,
    on_event: RunEvent | None,
    should_stop: ShouldStop | None,
) -> Path:
    """One (method, seed) run: the finished run of this recipe reused, an interrupted one resumed from its
    checkpoint, else a new one trained; its events reach `on_event` labelled "<method> s<seed>"."""
    from compressor.engine.trainer import run

    label = f"{name} s{recipe.train.seed}"

    def forward(event: Event) -> None:
        if on_event is not None:
            on_event(label, event)

    found, status = find_run(runs_dir, recipe)
    if status == "done":
        assert found is not None
        return found
    if status == "resume":
        return run(None, forward, should_stop, out_dir=runs_dir, device=opts.device, resume=found)
    return run(recipe, forward, should_stop, out_dir=runs_dir, device=opts.device)


def _export(
    opts: CompareOptions, name: str, kind: str, run_dir: Path, exports: Path, errors: dict[str, str]
) -> dict[str, Any] | None:
    """The export report of a structured run (None for the others, with --no-export, or when the export
    fails: its error is recorded as "<method> export")."""
    if kind != "structured" or not opts.export:
        return None
    try:
        return export_report(run_dir, exports, opts.latency_budget_s)
    except CompressorError as exc:
        errors[f"{name} export"] = str(exc)
        return None


def run_compare(
    opts: CompareOptions,
    out: Path,
    *,
    on_event: RunEvent | None = None,
    on_board: Callable[[dict[str, Any]], None] | None = None,
    should_stop: ShouldStop | None = None,
) -> CompareResult:
    """Train every (method, seed) not already finished in the compare folder, seed-major so a partial
    compare covers every method once before any twice; rewrite the leaderboard after each run."""
    plans = plan_runs(opts)
    folder = _open_folder(opts, Path(out))
    results: Results = {name: [] for name in opts.methods}
    errors: dict[str, str] = {}
    stopped = False
    for (name, _), (recipe, kind) in plans.items():
        if should_stop is not None and should_stop():
            stopped = True
            break
        try:
            run_dir = train_one(opts, folder / "runs", name, recipe, on_event, should_stop)
        except CompressorError as exc:
            errors[name] = str(exc)
            continue
        summary = _read_summary(run_dir)
        if summary is None or not summary.get("completed"):
            stopped = True
            break
        report = _export(opts, name, kind, run_dir, folder / "exports", errors)
        results[name].append((run_dir.name, run_metrics(summary, report)))
        board = write_board(folder, opts, plans, results, errors, plots=False)
        if on_board is not None:
            on_board(board)
    board = write_board(folder, opts, plans, results, errors, plots=True)
    return CompareResult(folder, board, stopped, errors)
