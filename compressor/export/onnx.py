"""ONNX conversion, checks and timing: everything in export that knows about onnx and onnxruntime.

Exporter: torch's TorchScript-based exporter (`dynamo=False`, deprecated but complete in torch 2.14)
followed by onnxscript's optimizer. The dynamo exporter yields the same clean graph (Conv/Relu/Add/Gemm,
BatchNorm folded into the preceding conv, symbolic batch) but took 15-40 s per CIFAR ResNet on the
project's 2-core machines against 0.2-1 s here, which adds up for BMA graphs, benchmarks and tests.
"""

from __future__ import annotations

import io
import json
import statistics
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
from torch import Tensor, nn

from compressor.errors import ExportError

INPUT = "input"
OPSETS = range(13, 21)  # the TorchScript exporter stops at 20; 13 is where Squeeze/ReduceSum take axes inputs
GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def to_onnx(module: nn.Module, example: Tensor, output_name: str, opset: int) -> onnx.ModelProto:
    """Trace `module` in eval mode into an optimised graph with input `input` and a symbolic batch dim.

    `example` should hold at least two rows so no shape is specialised to a batch of one.
    """
    if opset not in OPSETS:
        raise ExportError(f"--opset {opset}: supported opsets are {OPSETS.start}..{OPSETS.stop - 1}")
    module.eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the notice that dynamo=True is the new default
        torch.onnx.export(module, (example,), buf, dynamo=False, input_names=[INPUT], output_names=[output_name],
                          dynamic_axes={INPUT: {0: "batch"}, output_name: {0: "batch"}}, opset_version=opset)
    return onnxscript.optimizer.optimize(onnx.load_from_string(buf.getvalue()))


def set_metadata(proto: onnx.ModelProto, values: Mapping[str, Any]) -> None:
    """Store each value JSON-encoded in `metadata_props`, so consumers decode every key the same way."""
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in values.items()})


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


def initializer_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of all weights stored in the graph (what shrinking removes)."""
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)


def check(proto: onnx.ModelProto) -> None:
    """onnx's full checker (structure plus strict shape inference), as an ExportError on failure."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ExportError(f"the ONNX checker rejected the exported graph: {first}") from None


def session(
    model: bytes | onnx.ModelProto, *, threads: int = 0, level: str = "all", spinning: bool = True
) -> ort.InferenceSession:
    """A CPU onnxruntime session; threads=0 lets onnxruntime pick (one per physical core), and
    spinning=False makes idle worker threads sleep instead of busy-waiting (kinder on shared CPUs)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_LEVELS[level]
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, Tensor) else x
    return sess.run(None, {INPUT: np.ascontiguousarray(array, dtype=np.float32)})[0]


@torch.no_grad()
def max_abs_diff(sess: ort.InferenceSession, reference: nn.Module, inputs: Sequence[Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over every output element of every input batch."""
    reference.eval()
    worst = 0.0
    for x in inputs:
        expected = reference(x).float().cpu().numpy()
        got = run(sess, x)
        if got.shape != expected.shape:
            raise ExportError(f"the ONNX output has shape {got.shape} for a batch of {x.shape[0]}, "
                              f"PyTorch gives {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def accuracy(sess: ort.InferenceSession, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Top-1 accuracy of the ONNX model on (normalised input, label) batches."""
    correct = seen = 0
    for x, y in batches:
        pred = run(sess, x).argmax(axis=1)
        correct += int((pred == np.asarray(y)).sum())
        seen += len(pred)
    if seen == 0:
        raise ExportError("the evaluation split is empty; cannot verify the exported model's accuracy")
    return correct / seen


def latency_samples(
    sessions: Mapping[str, ort.InferenceSession],
    input_shape: Sequence[int],
    batches: Sequence[int] = (1, 64),
    *,
    budget_s: float = 2.0,
    min_runs: int = 5,
    max_runs: int = 500,
    warmup: int = 3,
    clock: str = "wall",
) -> dict[str, dict[str, list[float]]]:
    """Seconds of every run for each session and batch size, {name: {"1": [s, ...], "64": [...]}}; the i-th
    entries of all sessions come from the same round.

    Runs are interleaved (every session at every batch size in turn, repeated) so load from other
    processes hits all of them alike; repeats continue until `budget_s` is spent and `min_runs` done.
    clock="cpu" times the calling thread's CPU time instead of wall time: with one intra-op thread the
    whole run executes on that thread, so time spent descheduled on a busy machine is not counted.
    """
    tick = time.thread_time if clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, *input_shape), dtype=np.float32) for b in batches}
    for sess in sessions.values():
        for x in inputs.values():
            for _ in range(warmup):
                sess.run(None, {INPUT: x})
    times: dict[str, dict[str, list[float]]] = {name: {str(b): [] for b in batches} for name in sessions}
    order = list(sessions.items())
    start, runs = time.perf_counter(), 0
    while runs < min_runs or (runs < max_runs and time.perf_counter() - start < budget_s):
        for b, x in inputs.items():
            for name, sess in order if runs % 2 else order[::-1]:  # alternate who runs first (warm caches)
                t0 = tick()
                sess.run(None, {INPUT: x})
                times[name][str(b)].append(tick() - t0)
        runs += 1
    return times


def latency_ms(
    sessions: Mapping[str, ort.InferenceSession],
    input_shape: Sequence[int],
    batches: Sequence[int] = (1, 64),
    **timing: Any,
) -> dict[str, dict[str, float]]:
    """Median milliseconds per run for each session and batch size, {name: {"1": ms, "64": ms}} (the
    options are `latency_samples`')."""
    samples = latency_samples(sessions, input_shape, batches, **timing)
    return {name: {b: 1000.0 * statistics.median(ts) for b, ts in per.items()} for name, per in samples.items()}


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range over median: how far apart the middle half of repeated measurements lie."""
    if len(values) < 4:
        return float("inf")
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


def paired_speedup(base: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """(median, relative spread) of base/other over rounds timed side by side: a slow moment of the machine
    slows both runs of a round, so the ratio holds where either time alone would not."""
    ratios = [b / o for b, o in zip(base, other, strict=True) if o > 0]
    return statistics.median(ratios), relative_spread(ratios)
