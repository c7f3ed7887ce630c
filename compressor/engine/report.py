"""What a run reports about its network: sizes and MACs of the shrunk network, per-layer widths, and the
summary.json written at the end."""

from __future__ import annotations

import json
from typing import Any

import torch

from compressor import metrics as M
from compressor.engine.session import Session
from compressor.methods import Method
from compressor.recipe import Recipe


def sparsity_report(model: torch.nn.Module, method: Method, example: torch.Tensor, classifier: str) -> dict[str, Any]:
    """Parameters, MACs of the network with its pruned channels removed, and per-layer kept/total channels."""
    params, nonzero = M.count_params(model)
    if method.groups is not None:  # the same rows (coupled layers) before and after a removal
        pruned = method.pruned if method.pruned is not None else torch.zeros(len(method.groups), dtype=torch.bool)
        layers = method.groups.layer_table(pruned)
        macs, params_shrunk = M.count_macs(model, example), params
        if bool(pruned.any()):
            from compressor.prune import shrink

            small = shrink(model, method.groups, pruned)
            macs = M.count_macs(small, example)
            params_shrunk = sum(p.numel() for p in small.parameters())
    else:
        widths = M.conv_linear_widths(model, skip=classifier)
        layers = [{"layer": k, "kept": v, "total": v} for k, v in widths.items()]
        macs = M.count_macs(model, example)
        params_shrunk = params
    kept = sum(row["kept"] for row in layers)
    total = sum(row["total"] for row in layers)
    return {
        "params": params,
        "params_nonzero": nonzero,
        "params_shrunk": params_shrunk,
        "param_sparsity": 1.0 - nonzero / max(1, params),
        "channel_sparsity": 1.0 - kept / max(1, total),
        "macs": macs,
        "layers": layers,
    }


def run_summary(recipe: Recipe, s: Session, method: Method, ev: dict, bma: dict | None, macs_dense: float,
                train_seconds: float, images_seen: int, stopped: bool) -> dict[str, Any]:
    """summary.json: the final evaluation, the network's size, timing, the data's description and what the
    method adds (`Method.summary_extra`)."""
    classifier = getattr(s.model, "classifier_name", "")
    sparsity = sparsity_report(s.model, method, s.example_input, classifier)
    summary: dict[str, Any] = {
        "method": recipe.method.name,
        "model": recipe.model.name,
        "dataset": recipe.data.name,
        "epochs": recipe.train.epochs,
        "completed": not stopped,
        **{key: ev.get(key) for key in ("accuracy", "nll", "ece", "brier", "reliability")},
        **{key: sparsity[key] for key in ("params", "params_nonzero", "params_shrunk", "macs")},
        "macs_dense": macs_dense,
        **{key: sparsity[key] for key in ("param_sparsity", "channel_sparsity", "layers")},
        "train_seconds": train_seconds,
        "train_images_per_second": images_seen / max(1e-9, train_seconds),
        "n_train": len(s.data.train),
        "n_val": len(s.data.val),
        "classes": list(s.data.classes),
        "mean": list(s.data.mean),
        "std": list(s.data.std),
        "input_shape": list(s.data.input_shape),
    }
    if bma is not None:
        summary["bma"] = bma
    summary.update(method.summary_extra())
    summary.update(target_report(recipe, method, summary, stopped))
    return json.loads(json.dumps(summary))


def target_report(recipe: Recipe, method: Method, summary: dict[str, Any], stopped: bool) -> dict[str, Any]:
    """Whether a pruning target was met on the network the run ended with, and why not when it was not (a run
    must never finish as if it had pruned when it did not)."""
    prune = recipe.prune
    if prune.target is None or method.kind_of(recipe.method) == "dense":
        return {}
    kind = prune.target_kind
    if method.kind_of(recipe.method) == "unstructured":
        achieved = summary.get("weight_sparsity", 0.0)
    elif kind == "macs":
        achieved = 1.0 - summary["macs"] / summary["macs_dense"]
    elif kind == "params":
        achieved = 1.0 - summary["params_shrunk"] / summary["params"]
    else:
        achieved = summary["channel_sparsity"]
    out: dict[str, Any] = {"target": prune.target, "target_kind": kind, "target_achieved": achieved,
                           "target_met": achieved >= prune.target - 0.005}
    if not out["target_met"]:
        why = "the run stopped before its removal" if stopped else "the removal did not reach it"
        out["target_note"] = f"{achieved:.1%} of {kind} removed, target {prune.target:.0%}: {why}"
    return out
