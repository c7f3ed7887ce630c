"""The leaderboard: one run's numbers, their mean and std over seeds, leaderboard.json/.md and the rich table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressor.compare.plan import CompareOptions, Plans
from compressor.compare.plots import plot
from compressor.storage.rundir import write_json

# Per-run numbers averaged over seeds; the leaderboard adds `<key>_std`.
METRICS = (
    "accuracy",
    "nll",
    "ece",
    "brier",
    "params",
    "params_nonzero",
    "macs",
    "macs_dense",
    "mac_reduction",
    "param_sparsity",
    "weight_sparsity",
    "channel_sparsity",
    "train_seconds",
    "latency_ms",
    "latency_ms_b64",
    "latency_ms_dense",
    "speedup",
    "speedup_b64",
    "speedup_uncertainty",
    "speedup_b64_uncertainty",
    "bma_accuracy",
    "bma_nll",
    "bma_ece",
    "bma_samples",
)
# Numbers a run's summary.json holds under the leaderboard's own name.
SUMMARY_KEYS = (
    "accuracy",
    "nll",
    "ece",
    "brier",
    "params_nonzero",
    "macs",
    "macs_dense",
    "param_sparsity",
    "channel_sparsity",
    "train_seconds",
    "weight_sparsity",
)
LATENCY_KEYS = ("latency_ms", "latency_ms_b64", "latency_ms_dense", "speedup", "speedup_b64", "speedup_uncertainty",
                "speedup_b64_uncertainty")
# (method, seed) runs finished so far, per method: (run directory name, run_metrics of it).
Results = dict[str, list[tuple[str, dict[str, Any]]]]


def run_metrics(summary: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    """One run's leaderboard numbers (None where a number does not apply)."""
    out: dict[str, Any] = {k: summary.get(k) for k in SUMMARY_KEYS}
    out["params"] = summary.get("params_shrunk", summary.get("params"))
    out["mac_reduction"] = 1.0 - summary["macs"] / summary["macs_dense"]
    bma = summary.get("bma") or {}
    for key in ("accuracy", "nll", "ece", "samples"):
        out[f"bma_{key}"] = bma.get(key)
    for key in LATENCY_KEYS:
        out[key] = None
    out["timing_trustworthy"], out["timing_notes"] = None, []
    if report is not None:
        out["latency_ms"], out["latency_ms_b64"] = report["latency_ms"]["1"], report["latency_ms"]["64"]
        out["latency_ms_dense"] = report["latency_ms_dense"]["1"]
        out["speedup"], out["speedup_b64"] = report["speedup"]["1"], report["speedup"]["64"]
        timing = report.get("timing")
        if timing is None:  # a report written before exports were timed robustly
            out["timing_trustworthy"], out["timing_notes"] = False, ["timed before spreads were recorded"]
        else:
            uncertainty = report["speedup_uncertainty"]
            out["speedup_uncertainty"], out["speedup_b64_uncertainty"] = uncertainty["1"], uncertainty["64"]
            out["timing_trustworthy"], out["timing_notes"] = timing["trustworthy"], list(timing["notes"])
    out["reliability"] = summary.get("reliability")
    return out


def _pool_reliability(bins: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Reliability bins of several runs as one diagram: counts summed, confidence and accuracy weighted."""
    pooled = []
    for parts in zip(*bins, strict=True):
        count = sum(b["count"] for b in parts)
        pooled.append(
            {
                "lo": parts[0]["lo"],
                "hi": parts[0]["hi"],
                "count": count,
                "confidence": sum(b["confidence"] * b["count"] for b in parts) / max(1, count),
                "accuracy": sum(b["accuracy"] * b["count"] for b in parts) / max(1, count),
            }
        )
    return pooled


def aggregate(name: str, kind: str, runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One leaderboard row: the mean (and sample std) of each metric over the finished seeds, plus the
    reliability bins pooled over them."""
    row: dict[str, Any] = {"method": name, "kind": kind, "seeds": len(runs), "runs": [r for r, _ in runs]}
    for key in METRICS:
        values = [m[key] for _, m in runs if m.get(key) is not None]
        row[key] = statistics.fmean(values) if values else None
        row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    verdicts = [m.get("timing_trustworthy") for _, m in runs if m.get("timing_trustworthy") is not None]
    row["timing_trustworthy"] = all(verdicts) if verdicts else None
    row["timing_notes"] = [f"{run}: {note}" for run, m in runs for note in m.get("timing_notes") or []]
    bins = [m["reliability"] for _, m in runs if m.get("reliability")]
    if bins:
        row["reliability"] = _pool_reliability(bins)
    return row


def leaderboard(opts: CompareOptions, plans: Plans, results: Results, errors: dict[str, str]) -> dict[str, Any]:
    """The leaderboard of every run finished so far: the shared settings (read off the first method's first
    run), one row per method with a finished run, and the errors."""
    first = plans[(opts.methods[0], 0)][0]
    kinds = {name: kind for (name, _), (_, kind) in plans.items()}
    rows = [aggregate(name, kinds[name], runs) for name, runs in results.items() if runs]
    return {
        "recipe": str(Path(opts.recipe).resolve()),
        "model": first.model.name,
        "dataset": first.data.name,
        "epochs": first.train.epochs,
        "prune_epoch": first.prune.target_epoch,
        "target": opts.target,
        "seeds": opts.seeds,
        "methods": list(opts.methods),
        "rows": rows,
        "errors": errors,
    }


def write_board(
    folder: Path,
    opts: CompareOptions,
    plans: Plans,
    results: Results,
    errors: dict[str, str],
    *,
    plots: bool,
) -> dict[str, Any]:
    """leaderboard.json and leaderboard.md from every run finished so far (after each run), and the plots
    (at the end, also of a stopped compare: drawing them takes longer than a tiny run)."""
    board = leaderboard(opts, plans, results, errors)
    write_json(folder / "leaderboard.json", board)
    (folder / "leaderboard.md").write_text(markdown(board), encoding="utf-8")
    if plots and board["rows"]:
        plot(board, folder)
    return board


def _fmt(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    value = row.get(key)
    if value is None:
        return "–"
    text = f"{value * scale:.{digits}f}"
    std = row.get(f"{key}_std")
    if row["seeds"] > 1 and std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text + suffix


def _speedup(row: dict[str, Any]) -> str:
    """Both speed-ups, the batch-64 one with its 95 % interval; "(?)" marks a timing not to be trusted."""
    if row.get("speedup") is None:
        return "–"
    text = f"{row['speedup']:.2f}x / {row['speedup_b64']:.2f}x"
    if row.get("speedup_b64_uncertainty") is not None:
        text += f" ±{100 * row['speedup_b64_uncertainty']:.0f}%"
    return text + (" (?)" if row.get("timing_trustworthy") is False else "")


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("method", lambda r: r["method"]),
    ("kind", lambda r: r["kind"]),
    ("acc %", lambda r: _fmt(r, "accuracy", 100)),
    ("NLL", lambda r: _fmt(r, "nll", digits=3)),
    ("ECE", lambda r: _fmt(r, "ece", digits=4)),
    ("Brier", lambda r: _fmt(r, "brier", digits=3)),
    (
        "BMA acc % / ECE",
        lambda r: (
            "–"
            if r.get("bma_accuracy") is None
            else f"{_fmt(r, 'bma_accuracy', 100)} / {_fmt(r, 'bma_ece', digits=4)}"
        ),
    ),
    ("params (M)", lambda r: _fmt(r, "params", 1e-6, 3)),
    ("MACs (M)", lambda r: _fmt(r, "macs", 1e-6)),
    ("MACs removed", lambda r: _fmt(r, "mac_reduction", 100, 1, " %")),
    ("zero params", lambda r: _fmt(r, "param_sparsity", 100, 1, " %")),
    ("channels removed", lambda r: _fmt(r, "channel_sparsity", 100, 1, " %")),
    (
        "ONNX ms (b1 / b64)",
        lambda r: (
            "–" if r.get("latency_ms") is None else f"{r['latency_ms']:.3f} / {r['latency_ms_b64']:.2f}"
        ),
    ),
    ("speedup (b1 / b64)", lambda r: _speedup(r)),
    ("train s", lambda r: _fmt(r, "train_seconds", digits=0)),
)


def markdown(board: dict[str, Any]) -> str:
    lines = [
        f"# compare: {board['model']} on {board['dataset']}",
        "",
        (
            f"{board['epochs']} epochs (one-shot pruning at epoch {board['prune_epoch']}), target "
            f"{board['target']:.0%} removed (MACs for structured methods, each landing within a point above it; "
            f"weights for unstructured methods), {board['seeds']} seed(s), every seed scored on the same "
            "held-out examples (`data.split_seed`); accuracy/NLL/ECE/Brier of the final network, BMA of the posterior samples "
            "where collected; latency of the verified ONNX export against the dense network (onnxruntime, CPU, one "
            "thread, thread CPU time, the two interleaved; the speed-up is the median of the rounds' ratios, ± its 95 % "
            "interval; (?) marks a timing not to be trusted, with the reason below)."
        ),
        "",
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row) for _, cell in COLUMNS) + " |" for row in board["rows"]]
    doubtful = [row for row in board["rows"] if row.get("timing_trustworthy") is False]
    if doubtful:
        lines += ["", "Timings not to be trusted (re-time with `python benchmarks/bench_export.py --runs RUN_DIR`):"]
        lines += [f"- {row['method']}: {'; '.join(row['timing_notes'])}" for row in doubtful]
    if board["errors"]:
        lines += ["", "Failed:"] + [f"- {name}: {message}" for name, message in board["errors"].items()]
    return "\n".join(lines) + "\n"


CONSOLE_COLUMNS = (
    "method",
    "kind",
    "acc %",
    "NLL",
    "ECE",
    "MACs removed",
    "zero params",
    "speedup (b1 / b64)",
    "train s",
)


def table(board: dict[str, Any]) -> Any:
    """The leaderboard's main columns as a rich Table (leaderboard.md has them all)."""
    from rich.table import Table

    columns = [(name, cell) for name, cell in COLUMNS if name in CONSOLE_COLUMNS]
    out = Table(
        title=f"leaderboard ({len(board['rows'])}/{len(board['methods'])} methods)", title_justify="left"
    )
    for name, _ in columns:
        out.add_column(name, justify="left" if name in ("method", "kind") else "right")
    for row in board["rows"]:
        out.add_row(*(cell(row) for _, cell in columns))
    return out
