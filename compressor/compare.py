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

import json
import statistics
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compressor.events import Event
from compressor.errors import CompressorError, RecipeError, RunDirError
from compressor.recipe import MethodConfig, Recipe, Section, apply_overrides, parse_override, validate_recipe

DEFAULT_METHODS = (
    "sgd",
    "avb",
    "emmcmc",
    "magnitude",
    "gmp",
    "l1_filter",
    "slimming",
    "snip",
    "random",
    "depgraph",
)
DENSE = frozenset({"sgd", "avb"})
UNSTRUCTURED = frozenset({"magnitude", "gmp"})
MANIFEST = "compare.json"
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
    "bma_accuracy",
    "bma_nll",
    "bma_ece",
    "bma_samples",
)
RunEvent = Callable[[str, Event], None]


@dataclass
class CompareOptions:
    """What `compressor compare` was asked for; stored as compare.json so `--resume` can repeat it."""

    recipe: Path
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    target: float = 0.5
    overrides: list[str] = field(default_factory=list)
    method_overrides: list[str] = field(default_factory=list)  # "NAME:KEY=VALUE"
    seeds: int = 1
    device: str | None = None
    export: bool = True
    latency_budget_s: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "recipe": str(Path(self.recipe).resolve())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompareOptions:
        return cls(**{**data, "recipe": Path(data["recipe"])})


@dataclass
class CompareResult:
    folder: Path
    board: dict[str, Any]
    stopped: bool
    errors: dict[str, str]


# ------------------------------------------------------------------------------------------- recipes


def method_configs() -> dict[str, type[Section]]:
    """Method name -> its config class, read off the recipe's discriminated union."""
    union = typing.get_args(MethodConfig)[0]
    return {cls.model_fields["name"].default: cls for cls in typing.get_args(union)}


def method_kind(name: str, section: dict[str, Any]) -> str:
    """ "dense", "structured" (target on MACs) or "unstructured" (target on weights)."""
    if name in DENSE:
        return "dense"
    if name in UNSTRUCTURED or (name == "snip" and not section.get("structured", False)):
        return "unstructured"
    return "structured"


def _shared_fields(cls: type[Section], source: type[Section]) -> set[str]:
    """Fields of the most derived config class both inherit from (none when that is only `Section`)."""
    for base in cls.__mro__:
        if base is Section or not (isinstance(base, type) and issubclass(base, Section)):
            continue
        if issubclass(source, base):
            return set(base.model_fields)
    return set()


def _parse_method_sets(texts: Sequence[str], configs: dict[str, type[Section]]) -> list[tuple[str, str]]:
    parsed = []
    for text in texts:
        owner, sep, rest = text.partition(":")
        if not sep or owner not in configs:
            raise RecipeError(
                f"--method-set {text}: expected NAME:KEY=VALUE with NAME one of {', '.join(configs)}"
            )
        key = parse_override(rest)[0][0]
        if key not in configs[owner].model_fields or key == "name":
            raise RecipeError(f"--method-set {text}: '{key}' is not a setting of method '{owner}'")
        parsed.append((owner, rest))
    return parsed


def method_section(
    name: str, recipe_section: dict[str, Any], method_sets: Sequence[str]
) -> tuple[dict, dict]:
    """The method section `name` trains with, and where each overridden key came from (for error messages)."""
    configs = method_configs()
    cls = configs[name]
    section: dict[str, Any] = {"name": name}
    source = configs.get(recipe_section.get("name", ""))
    if source is not None:
        shared = _shared_fields(cls, source)
        section.update({k: v for k, v in recipe_section.items() if k in shared and k != "name"})
    parsed = _parse_method_sets(method_sets, configs)
    inherited = [(owner, rest) for owner, rest in parsed if owner != name and issubclass(cls, configs[owner])]
    origin: dict[tuple[str, ...], str] = {}
    for owner, rest in inherited + [(owner, rest) for owner, rest in parsed if owner == name]:
        section, keys = apply_overrides(section, [rest])
        origin.update({("method",) + key: f"--method-set {owner}:{rest}" for key in keys})
    return section, origin


def _default_target_epoch(data: dict[str, Any]) -> int:
    from compressor.recipe import TrainConfig

    epochs = (data.get("train") or {}).get("epochs", TrainConfig.model_fields["epochs"].default)
    return max(1, round(0.6 * int(epochs)))


def method_recipe(opts: CompareOptions, name: str, seed_index: int) -> tuple[Recipe, str]:
    """The validated recipe of one (method, seed) run and the method's kind."""
    path = Path(opts.recipe)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: YAML syntax error: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}:1: the recipe must be a mapping with sections model, data, method, train")
    data, origin = apply_overrides(raw, opts.overrides)
    section, method_origin = method_section(name, data.get("method") or {}, opts.method_overrides)
    kind = method_kind(name, section)
    train = dict(data.get("train") or {})
    train["seed"] = int(train.get("seed", 0)) + seed_index
    prune = dict(data.get("prune") or {})
    prune.setdefault("target_epoch", None)
    if prune["target_epoch"] is None:
        prune["target_epoch"] = _default_target_epoch(data)
    prune["target"] = None if kind == "dense" else opts.target
    if kind != "dense":
        prune["target_kind"] = "macs" if kind == "structured" else "params"
    data = {**data, "name": f"{name}-s{train['seed']}", "method": section, "train": train, "prune": prune}
    recipe = validate_recipe(data, where=f"{path} (method {name})", origin={**origin, **method_origin})
    return recipe, kind


# ------------------------------------------------------------------------------------------- runs


def _stored_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved recipe read through today's schema, so a key added since (with its default) does
    not make an upgraded compressor retrain finished runs; None when it is unreadable or no longer valid."""
    try:
        stored = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        return validate_recipe(stored, where=str(run_dir / "recipe.yaml")).to_dict()
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
    already written: a report file only exists for an export that passed every check)."""
    from compressor.export.pipeline import ExportOptions, export_run

    report_path = exports / f"{run_dir.name}.json"
    if report_path.is_file():
        return json.loads(report_path.read_text(encoding="utf-8"))
    exports.mkdir(exist_ok=True)
    return export_run(
        ExportOptions(
            run_dir=run_dir, output=exports / f"{run_dir.name}.onnx", force=True, latency_budget_s=budget_s
        )
    )


def run_metrics(summary: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    """One run's leaderboard numbers (None where a number does not apply)."""
    out: dict[str, Any] = {
        k: summary.get(k)
        for k in (
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
    }
    out["params"] = summary.get("params_shrunk", summary.get("params"))
    out["mac_reduction"] = 1.0 - summary["macs"] / summary["macs_dense"]
    bma = summary.get("bma") or {}
    for key in ("accuracy", "nll", "ece", "samples"):
        out[f"bma_{key}"] = bma.get(key)
    for key in ("latency_ms", "latency_ms_b64", "latency_ms_dense", "speedup", "speedup_b64"):
        out[key] = None
    if report is not None:
        out["latency_ms"], out["latency_ms_b64"] = report["latency_ms"]["1"], report["latency_ms"]["64"]
        out["latency_ms_dense"] = report["latency_ms_dense"]["1"]
        out["speedup"], out["speedup_b64"] = report["speedup"]["1"], report["speedup"]["64"]
    out["reliability"] = summary.get("reliability")
    return out


def aggregate(name: str, kind: str, runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One leaderboard row: the mean (and sample std) of each metric over the finished seeds, plus the
    reliability bins pooled over them."""
    row: dict[str, Any] = {"method": name, "kind": kind, "seeds": len(runs), "runs": [r for r, _ in runs]}
    for key in METRICS:
        values = [m[key] for _, m in runs if m.get(key) is not None]
        row[key] = statistics.fmean(values) if values else None
        row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    bins = [m["reliability"] for _, m in runs if m.get("reliability")]
    if bins:
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
        row["reliability"] = pooled
    return row


# ------------------------------------------------------------------------------------------- the loop


def compare_folder(out: Path) -> Path:
    """`out` itself when it already is a compare folder (so a re-invocation resumes), else a fresh
    `out/compare-<stamp>`."""
    if (out / MANIFEST).is_file():
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    for k in range(1000):
        folder = out / (f"compare-{stamp}" + (f"-{k}" if k else ""))
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RunDirError(f"{out}: too many compare folders named compare-{stamp}")


def run_compare(
    opts: CompareOptions,
    out: Path,
    *,
    on_event: RunEvent | None = None,
    on_board: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompareResult:
    """Train every (method, seed) not already finished in the compare folder, seed-major so a partial
    compare covers every method once before any twice; rewrite the leaderboard after each run."""
    from compressor.engine.trainer import run

    configs = method_configs()
    unknown = [m for m in opts.methods if m not in configs]
    if unknown or not opts.methods:
        raise RecipeError(
            f"--methods: unknown method(s) {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(configs)})"
        )
    if len(set(opts.methods)) != len(opts.methods):
        raise RecipeError("--methods: a method is listed twice")
    if not 0.0 < opts.target < 1.0:
        raise RecipeError(f"--target {opts.target}: expected a fraction strictly between 0 and 1")
    plans = {(name, s): method_recipe(opts, name, s) for s in range(opts.seeds) for name in opts.methods}
    folder = compare_folder(Path(out))
    (folder / MANIFEST).write_text(json.dumps(opts.to_json(), indent=2), encoding="utf-8")
    runs_dir, exports = folder / "runs", folder / "exports"
    runs_dir.mkdir(exist_ok=True)
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {name: [] for name in opts.methods}
    errors: dict[str, str] = {}
    first = plans[(opts.methods[0], 0)][0]
    board: dict[str, Any] = {}
    stopped = False
    for (name, seed), (recipe, kind) in plans.items():
        if should_stop is not None and should_stop():
            stopped = True
            break
        label = f"{name} s{recipe.train.seed}"
        found, status = find_run(runs_dir, recipe)

        def forward(event: Event, label: str = label) -> None:
            if on_event is not None:
                on_event(label, event)

        try:
            if status == "done":
                run_dir = found
            elif status == "resume":
                run_dir = run(None, forward, should_stop, out_dir=runs_dir, device=opts.device, resume=found)
            else:
                run_dir = run(recipe, forward, should_stop, out_dir=runs_dir, device=opts.device)
        except CompressorError as exc:
            errors[name] = str(exc)
            continue
        assert run_dir is not None
        summary = _read_summary(run_dir)
        if summary is None or not summary.get("completed"):
            stopped = True
            break
        report = None
        if kind == "structured" and opts.export:
            try:
                report = export_report(run_dir, exports, opts.latency_budget_s)
            except CompressorError as exc:
                errors[f"{name} export"] = str(exc)
        results[name].append((run_dir.name, run_metrics(summary, report)))
        board = write_board(folder, opts, first, results, errors, plans, plots=False)
        if on_board is not None:
            on_board(board)
    board = write_board(folder, opts, first, results, errors, plans, plots=True)
    return CompareResult(folder, board, stopped, errors)


def write_board(
    folder: Path,
    opts: CompareOptions,
    first: Recipe,
    results: dict[str, list],
    errors: dict[str, str],
    plans: dict,
    *,
    plots: bool,
) -> dict[str, Any]:
    """leaderboard.json and leaderboard.md from every run finished so far (after each run), and the plots
    (at the end, also of a stopped compare: drawing them takes longer than a tiny run)."""
    from compressor.storage.rundir import write_json

    kinds = {name: kind for (name, _), (_, kind) in plans.items()}
    rows = [aggregate(name, kinds[name], runs) for name, runs in results.items() if runs]
    board = {
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
    write_json(folder / "leaderboard.json", board)
    (folder / "leaderboard.md").write_text(markdown(board), encoding="utf-8")
    if plots and rows:
        plot(board, folder)
    return board


# ------------------------------------------------------------------------------------------- output


def _fmt(row: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    value = row.get(key)
    if value is None:
        return "–"
    text = f"{value * scale:.{digits}f}"
    std = row.get(f"{key}_std")
    if row["seeds"] > 1 and std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text + suffix


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
    (
        "speedup (b1 / b64)",
        lambda r: "–" if r.get("speedup") is None else f"{r['speedup']:.2f}x / {r['speedup_b64']:.2f}x",
    ),
    ("train s", lambda r: _fmt(r, "train_seconds", digits=0)),
)


def markdown(board: dict[str, Any]) -> str:
    lines = [
        f"# compare: {board['model']} on {board['dataset']}",
        "",
        (
            f"{board['epochs']} epochs (one-shot pruning at epoch {board['prune_epoch']}), target "
            f"{board['target']:.0%} removed (MACs for structured, weights for unstructured methods), "
            f"{board['seeds']} seed(s); accuracy/NLL/ECE/Brier of the final network, BMA of the posterior samples "
            "where collected; latency of the verified ONNX export against the dense network (onnxruntime, CPU)."
        ),
        "",
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row) for _, cell in COLUMNS) + " |" for row in board["rows"]]
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


MARKERS = {"dense": "s", "structured": "o", "unstructured": "^"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (fewer MACs and higher accuracy), by increasing MACs."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot(board: dict[str, Any], folder: Path) -> None:
    """accuracy_vs_macs.png (with the Pareto front), ece_vs_sparsity.png, reliability.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board["rows"]
    colours = {row["method"]: plt.get_cmap("tab10")(i % 10) for i, row in enumerate(rows)}

    fig, ax = plt.subplots(figsize=(7, 5))
    points = []
    for row in rows:
        x, y = 1.0 - row["mac_reduction"], 100 * row["accuracy"]
        points.append((x, y))
        ax.errorbar(
            x,
            y,
            yerr=100 * (row["accuracy_std"] or 0.0),
            marker=MARKERS[row["kind"]],
            ms=8,
            color=colours[row["method"]],
            label=row["method"],
            capsize=3,
        )
    front = pareto_front(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1, label="Pareto front")
    ax.set(
        xlabel="MACs remaining (fraction of dense)",
        ylabel="accuracy (%)",
        title=f"accuracy vs MACs: {board['model']} on {board['dataset']}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(folder / "accuracy_vs_macs.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for row in rows:
        ax.errorbar(
            row["param_sparsity"],
            row["ece"],
            yerr=row["ece_std"] or 0.0,
            marker=MARKERS[row["kind"]],
            ms=8,
            color=colours[row["method"]],
            label=row["method"],
            capsize=3,
        )
    ax.set(
        xlabel="parameter sparsity (fraction of weights zero)",
        ylabel="ECE (15 bins)",
        title="calibration vs sparsity",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(folder / "ece_vs_sparsity.png", dpi=120)
    plt.close(fig)

    with_bins = [row for row in rows if row.get("reliability")]
    if not with_bins:
        return
    cols = min(5, len(with_bins))
    rows_n = -(-len(with_bins) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3 * cols, 3.1 * rows_n), squeeze=False, sharey=True)
    for ax in axes.flat[len(with_bins) :]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, with_bins, strict=False):
        bins = row["reliability"]
        centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = bins[0]["hi"] - bins[0]["lo"]
        used = [b["count"] > 0 for b in bins]
        ax.bar(
            [c for c, u in zip(centres, used, strict=True) if u],
            [b["accuracy"] for b, u in zip(bins, used, strict=True) if u],
            width=width * 0.95,
            color=colours[row["method"]],
            alpha=0.8,
            edgecolor="black",
            lw=0.3,
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{row['method']}  ECE {row['ece']:.3f}", xlabel="confidence")
        ax.title.set_fontsize(9)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=110)
    plt.close(fig)


class ConsoleReporter:
    """Run events as lines prefixed with their method, and the leaderboard reprinted as rows fill in."""

    def __init__(self) -> None:
        import sys

        from rich.console import Console

        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)

    def event(self, label: str, event: Event) -> None:
        from compressor.sinks.console import event_line

        line = event_line(event)
        if line is not None:
            self.console.print(f"[{label}] {line}", markup=False)

    def board(self, board: dict[str, Any]) -> None:
        self.console.print(table(board))
