"""The export report as a rich table: what shrinking bought (size, MACs, latency) and what was verified."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.2f} {unit}"
    return f"{n / 1024:.2f} GB"


def _count(n: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:.0f}"


def report_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"export: {report['onnx']}", title_justify="left")
    table.add_column("")
    table.add_column("dense", justify="right")
    table.add_column("exported", justify="right")
    table.add_column("dense / exported", justify="right")
    rows = [
        ("parameters", report["params_dense"], report["params"], _count),
        ("MACs per example", report["macs_dense"], report["macs"], _count),
        ("file size", report["file_bytes_dense"], report["file_bytes"], _size),
    ]
    for label, dense, exported, fmt in rows:
        table.add_row(label, fmt(dense), fmt(exported), f"{dense / exported:.2f}x")
    for batch, dense in report["latency_ms_dense"].items():
        exported = report["latency_ms"][batch]
        table.add_row(f"latency, batch {batch}, 1 thread", f"{dense:.3f} ms", f"{exported:.3f} ms",
                      f"{report['speedup'][batch]:.2f}x")
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    source = f"BMA of {report['samples']} samples" if report["samples"] else f"checkpoint {report['checkpoint']}"
    lines = [
        (f"mode {report['mode']}, {source}, opset {report['opset']}, "
         f"{100 * report['channel_sparsity']:.1f}% of prunable channels removed"),
        f"onnxruntime vs PyTorch: max |difference| {report['max_abs_diff']:.2e} on {report['output']} (limit 1e-4)",
        (f"accuracy {100 * report['accuracy']:.2f}% (reference {100 * report['accuracy_reference']:.2f}%, "
         f"{report['accuracy_reference_source']})"),
    ]
    largest = max(report["speedup"], key=int)
    speedup, uncertainty = report["speedup"][largest], report["speedup_uncertainty"][largest]
    lines.append(f"speedup at batch {largest}: {speedup:.2f}x ±{100 * uncertainty:.0f}% for a "
                 f"{report['mac_reduction']:.2f}x MAC reduction ({speedup / report['mac_reduction']:.2f} of it); timed "
                 f"on one thread by thread CPU time, dense and exported interleaved over {report['timing']['rounds']} "
                 "rounds")
    timing = report["timing"]
    if not timing["trustworthy"]:
        lines.append("warning: these speed-ups are not trustworthy: " + "; ".join(timing["notes"]) +
                     f" (load average {timing['load_average']:.1f}); benchmarks/bench_export.py times at length")
    if report["mode"] == "shrunk" and report["odd_conv_widths"]:
        lines.append(f"tip: {report['odd_conv_widths']} conv layers have widths that are not multiples of 8, which "
                     "onnxruntime runs with slower kernels; --round-to 8 restores channels to fix that")
    if report.get("macs_unrounded"):
        extra = report["macs"] / report["macs_unrounded"] - 1.0
        lines.append(f"rounding widths to multiples of {report['round_to']} costs {100 * extra:+.1f}% MACs "
                     f"({_count(report['macs_unrounded'])} -> {_count(report['macs'])})")
    return lines


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line)
