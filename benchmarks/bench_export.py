"""Does removing channels buy real onnxruntime speed? Measured speedup / MAC reduction of shrunk CIFAR ResNets.

ResNet-20 and ResNet-56 (random weights, BatchNorm scales randomised so a magnitude order exists) are pruned
to about 2x, 3x and 4x fewer MACs by removing coupled channel groups (smallest group statistic first,
residual stages together) with four plans: the same fraction of every layer (any widths), the shipped
budget control with `prune.round_to` 8 or 16 (one global ranking, widths multiples of the block), and the
first plan followed by `--round-to 8/16`. Each is exported with
`compressor.export.onnx` and timed on onnxruntime's CPU provider at batch 1 and 64 against the dense export in
the same interleaved loop (medians), since these machines are shared. An ablation then changes one setting at
a time: onnxruntime's graph optimisation level, BatchNorm folding at export, intra-op threads, spinning.

    python benchmarks/bench_export.py            # full (~20 min on 2 busy cores)
    python benchmarks/bench_export.py --quick    # ResNet-20 only, shorter timing budget
    python benchmarks/bench_export.py --runs RUN_DIR ...   # networks trained and pruned by compressor
"""

from __future__ import annotations

import argparse
import io
import os
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from compressor.export import onnx as X
from compressor.metrics import count_macs
from compressor.models import create_model
from compressor.prune import GroupSet, build_groups
from compressor.prune.budget import select_for_target
from compressor.prune.shrink import shrink

SHAPE = (3, 32, 32)
BATCHES = (1, 64)


def random_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=SHAPE).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.2, 1.5)
                m.bias.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def prune_evenly(groups: GroupSet, score: Tensor, fraction: float) -> Tensor:
    """The `fraction` lowest-scoring groups of every coupled layer (at least one group kept per layer)."""
    pruned = torch.zeros(len(groups), dtype=torch.bool)
    for layer_id in range(len(groups.layers)):
        members = (groups.layer_ids == layer_id).nonzero().squeeze(1)
        drop = min(len(members) - 1, int(fraction * len(members)))
        pruned[members[torch.argsort(score[members])[:drop]]] = True
    return pruned


def prune_to(model: nn.Module, groups: GroupSet, score: Tensor, reduction: float, example: Tensor) -> Tensor:
    """Bisection on the per-layer fraction so the *measured* MACs drop by `reduction`x (widths arbitrary)."""
    dense = count_macs(model, example)
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        if dense / count_macs(shrink(model, groups, prune_evenly(groups, score, mid)), example) < reduction:
            lo = mid
        else:
            hi = mid
    return prune_evenly(groups, score, hi)


def prune_in_blocks(model: nn.Module, groups: GroupSet, score: Tensor, reduction: float, example: Tensor,
                    block: int) -> Tensor:
    """What every structured method ships (`prune.round_to`): the lowest-scoring groups up to the measured
    MAC target, each layer's kept width restored to a multiple of `block` (`budget.select_for_target`)."""
    return select_for_target(model, groups, score, 1.0 - 1.0 / reduction, "macs", example, block)


def trained_run(run_dir: Path, budget: float, threads: int) -> tuple[str, float, dict[str, float]]:
    """A run's network as `compressor export` builds it: the masked (dense-shaped) reference vs the shrunk one."""
    from compressor.export.prepare import build_networks, load_source

    nets = build_networks(load_source(run_dir, "last", False, []), masked=False, round_to=None)
    example = torch.zeros(1, *SHAPE)
    trace = torch.randn(2, *SHAPE)
    red = count_macs(nets.reference, example) / count_macs(nets.exported, example)
    dense = X.to_onnx(nets.reference, trace, "logits", 17)
    small = X.to_onnx(nets.exported, trace, "logits", 17)
    return f"{run_dir.name} (trained)", red, timed(dense, small, budget, threads=threads)


def unfolded_onnx(module: nn.Module, example: Tensor) -> onnx.ModelProto:
    """The same export with BatchNorm kept as separate nodes (for the folding ablation only)."""
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, dynamo=False, input_names=[X.INPUT], output_names=["logits"],
                          dynamic_axes={X.INPUT: {0: "batch"}}, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return onnx.load_from_string(buf.getvalue())


def timed(dense: onnx.ModelProto, small: onnx.ModelProto, budget: float, **session: Any) -> dict[str, float]:
    """Milliseconds and speedup of `small` over `dense` per batch size, both timed in one interleaved loop;
    single-threaded sessions are timed by thread CPU time (immune to other processes), others by wall time."""
    clock = "cpu" if session.get("threads") == 1 else "wall"
    sessions = {"dense": X.session(dense, **session), "small": X.session(small, **session)}
    ms = X.latency_ms(sessions, SHAPE, BATCHES, budget_s=budget, min_runs=7, clock=clock)
    out = {f"speedup_{b}": ms["dense"][b] / ms["small"][b] for b in ms["dense"]}
    out.update({f"ms_dense_{b}": ms["dense"][b] for b in ms["dense"]})
    out.update({f"ms_{b}": ms["small"][b] for b in ms["small"]})
    return out


def row(label: str, mac_reduction: float, t: dict[str, float]) -> str:
    return (f"| {label} | {mac_reduction:.2f}x | {t['ms_dense_1']:.2f} / {t['ms_1']:.2f} | {t['speedup_1']:.2f}x "
            f"({t['speedup_1'] / mac_reduction:.2f}) | {t['ms_dense_64']:.1f} / {t['ms_64']:.1f} | "
            f"{t['speedup_64']:.2f}x (**{t['speedup_64'] / mac_reduction:.2f}**) |")


HEADER = ("| network | MAC reduction | batch 1 ms dense / shrunk | speedup (÷ MAC red.) | batch 64 ms dense / shrunk "
          "| speedup (÷ MAC red.) |\n|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20 only, 1.5 s timing budget per row")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per row")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: its choice)")
    parser.add_argument("--runs", type=Path, nargs="+", help="time these trained, pruned run directories "
                        "instead: each one's shrunk export against its dense-shaped (masked) network")
    args = parser.parse_args()
    budget = args.budget or (1.5 if args.quick else 4.0)
    if args.runs:
        print(HEADER)
        for run_dir in args.runs:
            print(row(*trained_run(run_dir, budget, args.threads)), flush=True)
        return
    models = ["resnet20"] if args.quick else ["resnet20", "resnet56"]
    torch.set_num_threads(2)
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start; input {SHAPE}, {args.threads or 'default'} intra-op "
          f"thread(s) ({'thread CPU time' if args.threads == 1 else 'wall clock'}), timing budget {budget:g} s "
          "per row, medians of interleaved runs\n")
    example = torch.zeros(1, *SHAPE)
    trace = torch.randn(2, *SHAPE)
    ablation: list[str] = []
    print(HEADER)
    for name in models:
        model = random_model(name)
        groups = build_groups(model, trace)
        score = groups.statistic().detach()
        dense_macs = count_macs(model, example)
        dense = X.to_onnx(model, trace, "logits", 17)
        for reduction in (2.0, 3.0, 4.0):
            exact = prune_to(model, groups, score, reduction, example)
            variants = [
                ("any widths", exact),
                ("round_to 8 (shipped)", prune_in_blocks(model, groups, score, reduction, example, 8)),
                ("round_to 16", prune_in_blocks(model, groups, score, reduction, example, 16)),
                ("any widths + --round-to 8", groups.round_kept(exact, score, 8)),
                ("any widths + --round-to 16", groups.round_kept(exact, score, 16)),
            ]
            for label, mask in variants:
                small = shrink(model, groups, mask).eval()
                proto = X.to_onnx(small, trace, "logits", 17)
                red = dense_macs / count_macs(small, example)
                print(row(f"{name} {reduction:.0f}x, {label}", red,
                          timed(dense, proto, budget, threads=args.threads)), flush=True)
                if name == models[0] and reduction == 3.0 and label in ("any widths", "round_to 8 (shipped)"):
                    ablation += ablate(f"{name} 3x, {label}", model, small, dense, proto, trace, red, budget,
                                       args.threads)
    print(f"\nAblation (one setting changed from: BN folded, graph level all, {args.threads or 'default'} "
          "intra-op thread(s), spinning on)")
    print(HEADER)
    for line in ablation:
        print(line, flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; ran {time.process_time():.0f} s CPU")


def ablate(label: str, model: nn.Module, small: nn.Module, dense: onnx.ModelProto, proto: onnx.ModelProto,
           trace: Tensor, red: float, budget: float, threads: int) -> list[str]:
    lines = []
    for level in ("disable", "basic", "extended"):
        lines.append(row(f"{label}: graph level {level}", red, timed(dense, proto, budget, level=level,
                                                                      threads=threads)))
    unfolded_dense, unfolded_small = unfolded_onnx(model, trace), unfolded_onnx(small, trace)
    lines.append(row(f"{label}: BN not folded", red, timed(unfolded_dense, unfolded_small, budget, threads=threads)))
    lines.append(row(f"{label}: BN not folded, level disable", red,
                     timed(unfolded_dense, unfolded_small, budget, level="disable", threads=threads)))
    lines.append(row(f"{label}: 2 threads (wall clock)", red, timed(dense, proto, budget, threads=2)))
    lines.append(row(f"{label}: 2 threads, no spinning (wall clock)", red,
                     timed(dense, proto, budget, threads=2, spinning=False)))
    return lines


if __name__ == "__main__":
    main()
