"""`compressor export`: run directory -> shrink -> ONNX -> verify -> report, all or nothing.

The three files (`<stem>.onnx`, the `<stem>.json` report, the `<stem>.pt` PyTorch model) are written under
temporary names and renamed only after every check passed, the ONNX file last: a file at a final name is
always a verified export, and a failed export leaves nothing that looks like one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import onnx
import onnxruntime as ort
import torch
from torch import nn

from compressor import metrics as M
from compressor.errors import ExportError
from compressor.export import onnx as X
from compressor.export.prepare import (
    CHECKPOINT_FORMS,
    Ensemble,
    Networks,
    Source,
    build_networks,
    load_source,
)
from compressor.storage.modelfile import model_file_payload

MAX_ABS_DIFF = 1e-4  # onnxruntime vs PyTorch, on logits (or BMA probabilities)
ACCURACY_TOLERANCE = 1e-3  # 0.1 percentage points, as a fraction
LATENCY_BATCHES = (1, 64)
TIMING_ROUNDS = 7  # at least this many interleaved rounds, more while the timing budget lasts
NOTCH = 1.57  # 95 % interval of a median: +-1.57 IQR / sqrt(n)
MAX_UNCERTAINTY = 0.05  # a speed-up known to worse than +-5 % is not trusted
MAX_BEYOND_MACS = 1.25  # nor one beyond 1.25x the MAC reduction: removing channels cannot buy that


@dataclass
class ExportOptions:
    """What `compressor export` was asked for (see its --help)."""

    run_dir: Path
    output: Path | None = None
    masked: bool = False
    round_to: int | None = None
    bma: bool = False
    opset: int = 17
    checkpoint: str = "last"
    force: bool = False
    overrides: list[str] = field(default_factory=list)
    latency_budget_s: float = 1.0


def option_problem(opts: ExportOptions) -> str | None:
    """The first contradiction among the options, as a message, or None."""
    if opts.masked and opts.round_to is not None:
        return "--round-to only applies to shrunk exports (masked exports keep the dense widths)"
    if opts.bma and opts.checkpoint != "last":
        return "--bma exports the posterior samples; it cannot be combined with --checkpoint"
    if opts.checkpoint not in ("last", "best") and not re.fullmatch(r"sample-\d+", opts.checkpoint):
        return f"--checkpoint {opts.checkpoint}: expected {CHECKPOINT_FORMS}"
    if opts.round_to is not None and opts.round_to < 1:
        return f"--round-to {opts.round_to}: must be a positive channel multiple"
    if opts.opset not in X.OPSETS:
        return f"--opset {opts.opset}: supported opsets are {X.OPSETS.start}..{X.OPSETS.stop - 1}"
    if opts.output is not None and opts.output.suffix != ".onnx":
        return f"-o {opts.output}: the output file name must end in .onnx"
    return None


def default_output(opts: ExportOptions) -> Path:
    """exports/<run-name>.onnx under the current directory; variants get a suffix so they never clash."""
    parts = [Path(opts.run_dir).resolve().name]
    if opts.bma:
        parts.append("bma")
    elif opts.checkpoint != "last":
        parts.append(opts.checkpoint)
    if opts.masked:
        parts.append("masked")
    if opts.round_to:
        parts.append(f"r{opts.round_to}")
    return Path("exports") / ("-".join(parts) + ".onnx")


class _Staged:
    """Temporary files beside the final ones: created up front, so an unwritable destination fails before
    the slow work; renamed by `commit`, the first file (the ONNX one) last; deleted if not committed."""

    def __init__(self, finals: Sequence[Path], force: bool) -> None:
        self.finals = list(finals)
        self.temps = [p.with_name(f".{p.name}.tmp") for p in self.finals]
        self.force = force

    def __enter__(self) -> Self:
        if not self.force:
            for path in self.finals:
                if path.exists():
                    raise ExportError(f"{path} already exists; pass --force to overwrite it")
        folder = self.finals[0].parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for tmp in self.temps:
                tmp.write_bytes(b"")
        except OSError as exc:
            raise ExportError(f"{exc.filename or folder}: cannot write the export here "
                              f"({exc.strerror or exc.__class__.__name__})") from None
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        for tmp, path in reversed(list(zip(self.temps, self.finals, strict=True))):
            os.replace(tmp, path)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def _torch_accuracy(module: nn.Module, loader: Any) -> float:
    correct = seen = 0
    for x, y in loader:
        correct += int((module(x).argmax(dim=1) == torch.as_tensor(y)).sum())
        seen += len(y)
    return correct / max(1, seen)


def _channel_sparsity(nets: Networks) -> float:
    if nets.groups is None or nets.pruned is None:
        return 0.0
    table = nets.groups.layer_table(nets.pruned)
    return 1.0 - sum(r["kept"] for r in table) / max(1, sum(r["total"] for r in table))


def _odd_conv_widths(module: nn.Module) -> int:
    """Conv layers whose width is not a multiple of 8: onnxruntime's blocked (NCHWc) conv kernels on AVX2
    CPUs need multiples of 8, and such layers fall back to slower ones (benchmarks/RESULTS.md)."""
    return sum(1 for m in _members(module)[0].modules() if isinstance(m, nn.Conv2d) and m.out_channels % 8)


def _members(module: nn.Module) -> list[nn.Module]:
    return list(module.members) if isinstance(module, Ensemble) else [module]


def _reference_accuracy(source: Source, nets: Networks) -> tuple[float, str]:
    """The run's recorded accuracy for these weights; the PyTorch masked network's own when the run
    recorded none that applies (sample-K, a stopped run, a changed split, samples masking changed)."""
    if source.recorded_accuracy is not None and not (source.checkpoint == "samples" and nets.masking_changed_weights):
        return source.recorded_accuracy, source.recorded_source
    return _torch_accuracy(nets.reference, source.session.val_loader), "PyTorch masked network (fp32)"


def _unrounded_macs(source: Source, nets: Networks, example: torch.Tensor) -> float | None:
    if nets.groups is None or nets.pruned_unrounded is None or torch.equal(nets.pruned, nets.pruned_unrounded):
        return None
    from compressor.prune.shrink import shrink

    single = shrink(source.session.model, nets.groups, nets.pruned_unrounded)
    return M.count_macs(single, example) * len(source.states)


def export_run(opts: ExportOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export, verify and time one run; returns the report (also written as `<stem>.json`)."""
    say = log or (lambda message: None)
    problem = option_problem(opts)
    if problem:
        raise ExportError(problem)
    onnx_path = opts.output or default_output(opts)
    paths = [onnx_path, onnx_path.with_suffix(".json"), onnx_path.with_suffix(".pt")]
    with _Staged(paths, opts.force) as staged:
        say(f"loading {opts.run_dir}")
        source = load_source(opts.run_dir, opts.checkpoint, opts.bma, opts.overrides)
        nets = build_networks(source, masked=opts.masked, round_to=opts.round_to)
        output_name = "probs" if opts.bma else "logits"
        x = next(iter(source.session.val_loader))[0].cpu()
        x = torch.cat([x, x])[:8]  # at least two rows: a batch-2 trace and a batch > 1 parity check

        say("exporting to ONNX")
        dense_proto = X.to_onnx(nets.reference, x[:2], output_name, opts.opset)
        proto = dense_proto if opts.masked else X.to_onnx(nets.exported, x[:2], output_name, opts.opset)
        sizes = _sizes(source, nets)
        metadata = _metadata(opts, source, sizes["sparsity"], output_name)
        X.set_metadata(proto, metadata)
        X.check(proto)
        blob = proto.SerializeToString()
        sess = X.session(blob)

        say("verifying against PyTorch")
        verified = _verify(sess, source, nets, [x[:1], x], output_name)

        say("timing with onnxruntime")
        mac_reduction = sizes["macs_dense"] / sizes["macs"]
        timing = time_exports(dense_proto, None if opts.masked else blob, source.session.data.input_shape,
                              opts.latency_budget_s, mac_reduction)
        report: dict[str, Any] = {
            "onnx": str(paths[0]), "report": str(paths[1]), "model_file": str(paths[2]),
            "run": str(opts.run_dir), "checkpoint": source.checkpoint, "mode": metadata["mode"],
            "output": output_name, "samples": metadata["samples"], "opset": opts.opset, "round_to": opts.round_to,
            **{k: v for k, v in sizes.items() if k != "sparsity"}, "mac_reduction": mac_reduction,
            "channel_sparsity": sizes["sparsity"]["channels"], "odd_conv_widths": _odd_conv_widths(nets.exported),
            "file_bytes_dense": len(blob) if opts.masked else dense_proto.ByteSize(), "file_bytes": len(blob),
            **verified, **timing, "metadata": metadata, "versions": _versions(),
        }
        staged.temps[0].write_bytes(blob)
        staged.temps[1].write_text(json.dumps(report, indent=2), encoding="utf-8")
        torch.save(_model_file(source, nets, metadata), staged.temps[2])
        staged.commit()
    return report


def time_exports(dense: onnx.ModelProto, exported: bytes | None, input_shape: Sequence[int], budget_s: float,
                 mac_reduction: float) -> dict[str, Any]:
    """Latency of the dense and the exported graph, timed robustly: one intra-op thread each, by thread CPU
    time (time spent descheduled by other processes does not count), in interleaved rounds."""
    sessions = {"dense": X.session(dense, threads=1)}
    if exported is not None:
        sessions["export"] = X.session(exported, threads=1)
    samples = X.latency_samples(sessions, input_shape, LATENCY_BATCHES, budget_s=budget_s, min_runs=TIMING_ROUNDS,
                                clock="cpu")
    return timing_summary(samples["dense"], samples.get("export", samples["dense"]), mac_reduction)


def timing_summary(dense: dict[str, list[float]], exported: dict[str, list[float]],
                   mac_reduction: float) -> dict[str, Any]:
    """Medians per batch size and the speed-up as the median of the rounds' own ratios, with the rounds'
    spread and the median's 95 % interval. A speed-up known no better than +-5 %, or one beyond what the MAC
    reduction can buy, is flagged as not trustworthy (`timing.notes` says why)."""
    paired = {b: X.paired_speedup(dense[b], exported[b]) for b in exported}
    rounds = min(len(times) for times in exported.values())
    # The median's uncertainty: the notch of a box plot (McGill, Tukey & Larsen 1978), relative to the median.
    uncertainty = {b: NOTCH * spread / math.sqrt(rounds) for b, (_, spread) in paired.items()}
    notes = []
    for b, (speedup, spread) in paired.items():
        if uncertainty[b] > MAX_UNCERTAINTY:
            notes.append(f"batch {b}: the speed-up is uncertain by ±{100 * uncertainty[b]:.0f}% (rounds spread "
                         f"{100 * spread:.0f}% over {rounds} rounds)")
        if speedup > MAX_BEYOND_MACS * mac_reduction:
            notes.append(f"batch {b}: {speedup:.2f}x is more than a {mac_reduction:.2f}x MAC reduction can buy")
    return {
        "latency_ms_dense": {b: 1000.0 * statistics.median(ts) for b, ts in dense.items()},
        "latency_ms": {b: 1000.0 * statistics.median(ts) for b, ts in exported.items()},
        "speedup": {b: speedup for b, (speedup, _) in paired.items()},
        "speedup_spread": {b: spread for b, (_, spread) in paired.items()},
        "speedup_uncertainty": uncertainty,
        "timing": {"trustworthy": not notes, "notes": notes, "rounds": rounds, "threads": 1,
                   "clock": "thread CPU time", "load_average": os.getloadavg()[0]},
        "latency_setting": "onnxruntime CPU, 1 intra-op thread, graph level all, thread CPU time, dense and "
                           "exported interleaved; medians, speed-up = median of the rounds' ratios",
    }


def _sizes(source: Source, nets: Networks) -> dict[str, Any]:
    """Parameters and MACs of the dense and the exported network (MACs also before --round-to), and the
    sparsity the ONNX metadata records."""
    example = source.session.example_input.cpu()
    params_dense, params = _params(nets.reference), _params(nets.exported)
    macs_dense, macs = M.count_macs(nets.reference, example), M.count_macs(nets.exported, example)
    return {"params_dense": params_dense, "params": params, "macs_dense": macs_dense, "macs": macs,
            "macs_unrounded": _unrounded_macs(source, nets, example),
            "sparsity": {"channels": _channel_sparsity(nets), "params": 1.0 - params / params_dense,
                         "macs": 1.0 - macs / macs_dense}}


def _metadata(opts: ExportOptions, source: Source, sparsity: dict[str, float], output_name: str) -> dict[str, Any]:
    """The ONNX file's metadata_props: what a consumer needs to feed it and where it came from."""
    data, recipe = source.session.data, source.recipe
    return {
        "mean": list(data.mean), "std": list(data.std), "input_size": list(data.input_shape),
        "classes": list(data.classes), "method": recipe.method.name, "sparsity": sparsity,
        "source_run": str(Path(opts.run_dir).resolve()), "checkpoint": source.checkpoint,
        "model": recipe.model.name, "mode": "masked" if opts.masked else "shrunk", "output": output_name,
        "round_to": opts.round_to, "samples": len(source.states) if opts.bma else None,
    }


def _versions() -> dict[str, Any]:
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}


def _verify(sess: ort.InferenceSession, source: Source, nets: Networks, inputs: list[torch.Tensor],
            output_name: str) -> dict[str, Any]:
    """Parity with the PyTorch masked network, then accuracy on the evaluation split against the run's."""
    diff = X.max_abs_diff(sess, nets.reference, inputs)
    if not diff <= MAX_ABS_DIFF:
        raise ExportError(f"onnxruntime and PyTorch disagree: max |difference| {diff:.3g} on {output_name} "
                          f"exceeds {MAX_ABS_DIFF:g}")
    acc = X.accuracy(sess, source.session.val_loader)
    reference, reference_source = _reference_accuracy(source, nets)
    if abs(acc - reference) > ACCURACY_TOLERANCE:
        hint = (" (the checkpoint's pruned channels were not exactly zero, so the masked network differs "
                "from the trained one)" if nets.masking_changed_weights else "")
        raise ExportError(f"ONNX accuracy {100 * acc:.2f}% differs from the run's {100 * reference:.2f}% "
                          f"({reference_source}) by more than {100 * ACCURACY_TOLERANCE:.1f} points{hint}")
    return {"max_abs_diff": diff, "accuracy": acc, "accuracy_reference": reference,
            "accuracy_reference_source": reference_source}


def _model_file(source: Source, nets: Networks, metadata: dict[str, Any]) -> dict[str, Any]:
    recipe, data = source.recipe, source.session.data
    return model_file_payload(
        recipe=recipe.to_dict(), model_name=recipe.model.name, options=recipe.model.builder_options(),
        num_classes=data.num_classes,
        input_shape=list(data.input_shape), spec=nets.spec, members=_members(nets.exported),
        bma=metadata["samples"] is not None,
        extra={"classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
               "source_run": metadata["source_run"], "checkpoint": source.checkpoint},
    )
