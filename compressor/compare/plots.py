"""The compare's PNG plots (matplotlib, imported when drawing): accuracy vs MACs with its Pareto front,
calibration vs sparsity, and one reliability diagram per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MARKERS = {"dense": "s", "structured": "o", "unstructured": "^"}
Colours = dict[str, Any]


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
    accuracy_vs_macs(board, colours, folder / "accuracy_vs_macs.png")
    ece_vs_sparsity(rows, colours, folder / "ece_vs_sparsity.png")
    with_bins = [row for row in rows if row.get("reliability")]
    if with_bins:
        reliability(with_bins, colours, folder / "reliability.png")


def _point(ax: Any, x: float, y: float, yerr: float, row: dict[str, Any], colours: Colours) -> None:
    """One method as a marker (its kind's shape, its colour) with its error bar over seeds."""
    ax.errorbar(
        x,
        y,
        yerr=yerr,
        marker=MARKERS[row["kind"]],
        ms=8,
        color=colours[row["method"]],
        label=row["method"],
        capsize=3,
    )


def _save_scatter(fig: Any, ax: Any, path: Path) -> None:
    """Grid, legend, layout, write and close: the end of both scatter plots."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_vs_macs(board: dict[str, Any], colours: Colours, path: Path) -> None:
    """Accuracy against the fraction of the dense MACs left, each method's mean with its std, and the front."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    points = []
    for row in board["rows"]:
        x, y = 1.0 - row["mac_reduction"], 100 * row["accuracy"]
        points.append((x, y))
        _point(ax, x, y, 100 * (row["accuracy_std"] or 0.0), row, colours)
    front = pareto_front(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1, label="Pareto front")
    ax.set(
        xlabel="MACs remaining (fraction of dense)",
        ylabel="accuracy (%)",
        title=f"accuracy vs MACs: {board['model']} on {board['dataset']}",
    )
    _save_scatter(fig, ax, path)


def ece_vs_sparsity(rows: list[dict[str, Any]], colours: Colours, path: Path) -> None:
    """ECE against the fraction of zero weights, each method's mean with its std."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for row in rows:
        _point(ax, row["param_sparsity"], row["ece"], row["ece_std"] or 0.0, row, colours)
    ax.set(
        xlabel="parameter sparsity (fraction of weights zero)",
        ylabel="ECE (15 bins)",
        title="calibration vs sparsity",
    )
    _save_scatter(fig, ax, path)


def _reliability_panel(ax: Any, row: dict[str, Any], colour: Any) -> None:
    """One method's pooled reliability bins (the non-empty ones) against the diagonal. A bin's accuracy over
    a handful of examples is mostly noise: its bar fades with its count (full from 5 % of the examples), and
    every bar is labelled with the examples it holds."""
    bins = [b for b in row["reliability"] if b["count"] > 0]
    total = sum(b["count"] for b in bins)
    for b in bins:
        centre, height = (b["lo"] + b["hi"]) / 2, b["accuracy"]
        alpha = max(0.15, min(1.0, b["count"] / max(1.0, 0.05 * total)))
        ax.bar(centre, height, width=(b["hi"] - b["lo"]) * 0.95, color=colour, alpha=alpha, edgecolor="black",
               lw=0.3)
        ax.annotate(str(b["count"]), (centre, min(height, 0.93)), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=5, rotation=90, color="dimgray")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{row['method']}  ECE {row['ece']:.3f}", xlabel="confidence")
    ax.title.set_fontsize(9)


def reliability(with_bins: list[dict[str, Any]], colours: Colours, path: Path) -> None:
    """A grid of reliability diagrams, at most five per line, one per method that has bins."""
    import matplotlib.pyplot as plt

    cols = min(5, len(with_bins))
    rows_n = -(-len(with_bins) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3 * cols, 3.1 * rows_n), squeeze=False, sharey=True)
    for ax in axes.flat[len(with_bins) :]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, with_bins, strict=False):
        _reliability_panel(ax, row, colours[row["method"]])
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
