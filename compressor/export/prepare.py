"""From a run directory to the PyTorch networks an export needs: the dense (masked) reference and the
network to export, with pruned channel groups removed, optionally rounded up, or averaged over samples."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from compressor.engine.session import Session, build_session
from compressor.errors import ExportError, RunDirError
from compressor.prune import GroupSet
from compressor.recipe import Recipe, apply_overrides, stored_recipe, validate_recipe
from compressor.storage.checkpoint import load_checkpoint, load_sample

CHECKPOINT_FORMS = "last, best or sample-K"
# Keys that decide which examples form the evaluation split: a recorded accuracy only applies when they match.
_SPLIT_KEYS = ("name", "limit", "val_limit", "val_split", "image_size", "split_seed")


class Ensemble(nn.Module):
    """Bayesian model averaging in one graph: the mean of the members' softmax probabilities."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)


@dataclass
class Source:
    """What an export reads from a run directory."""

    run_dir: Path
    recipe: Recipe
    session: Session
    weights: dict[str, Tensor]  # the checkpoint's state dict (group statistics for --round-to come from it)
    states: list[dict[str, Tensor]]  # the state dicts to export: one, or the posterior samples for --bma
    spec: dict[str, Any] | None
    checkpoint: str  # "last", "best", "sample-002" or "samples"
    recorded_accuracy: float | None  # what the run measured for exactly these weights on this split
    recorded_source: str  # where recorded_accuracy comes from ("" when None)


def _sample_path(run_dir: Path, checkpoint: str) -> Path:
    match = re.fullmatch(r"sample-(\d+)", checkpoint)
    if match is None:
        raise ExportError(f"--checkpoint {checkpoint}: expected {CHECKPOINT_FORMS}")
    return run_dir / "samples" / f"sample-{int(match.group(1)):03d}.pt"


def load_source(run_dir: Path, checkpoint: str, bma: bool, overrides: list[str]) -> Source:
    """Read the checkpoint (and samples), rebuild data + dense model from the stored recipe."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if checkpoint not in ("last", "best"):
        _sample_path(run_dir, checkpoint)  # validate the form before any loading
    main = run_dir / "checkpoints" / ("best.pt" if checkpoint == "best" else "last.pt")
    if not main.is_file():
        raise RunDirError(f"{run_dir}: no checkpoint ({main.relative_to(run_dir)} is missing); "
                          "a run writes one after its first epoch")
    payload = load_checkpoint(main)
    stored = payload.get("recipe")
    if not isinstance(stored, dict):
        raise RunDirError(f"{main}: the checkpoint holds no recipe")
    stored = stored_recipe(stored)
    data, origin = apply_overrides(stored, overrides)
    recipe = validate_recipe(data, where=f"{main} (stored recipe)", origin=origin)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    same_split = all(stored["data"].get(k) == getattr(recipe.data, k) for k in _SPLIT_KEYS) and not recipe.train.amp
    recorded: float | None = None
    recorded_source = ""
    if bma:
        paths = sorted((run_dir / "samples").glob("sample-*.pt"))
        if not paths:
            raise ExportError(f"{run_dir}: --bma needs posterior samples in samples/ and there are none "
                              "(avb and emmcmc runs collect them)")
        states = [load_sample(p) for p in paths]
        label = "samples"
        bma_summary = summary.get("bma") or {}
        if same_split and bma_summary.get("samples") == len(states) and bma_summary.get("accuracy") is not None:
            recorded, recorded_source = float(bma_summary["accuracy"]), "summary.json bma"
    elif checkpoint in ("last", "best"):
        states, label = [payload["model"]], checkpoint
        finished = payload.get("step_in_epoch") == 0 and payload.get("epoch") == recipe.train.epochs
        if checkpoint == "last" and same_split and finished and summary.get("accuracy") is not None:
            recorded, recorded_source = float(summary["accuracy"]), "summary.json"
        elif checkpoint == "best" and same_split and payload.get("best_accuracy", -1.0) >= 0:
            recorded, recorded_source = float(payload["best_accuracy"]), "best.pt"
    else:
        path = _sample_path(run_dir, checkpoint)
        states, label = [load_sample(path)], path.stem
    session = build_session(recipe, torch.device("cpu"))
    return Source(run_dir, recipe, session, payload["model"], states, payload.get("pruned_spec"), label,
                  recorded, recorded_source)


@dataclass
class Networks:
    """The PyTorch side of an export; `reference` and `exported` compute the same function."""

    reference: nn.Module  # dense architecture, pruned groups zeroed ("masked"): also the dense baseline
    exported: nn.Module  # what goes into the ONNX file (shrunk unless masked)
    groups: GroupSet | None  # None when nothing is pruned
    pruned: Tensor | None  # final mask, after --round-to
    pruned_unrounded: Tensor | None
    spec: dict[str, Any] | None  # pruned_spec of `exported` (None when masked or nothing is pruned)
    masking_changed_weights: bool  # some pruned slice was not already zero in the weights


def _nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def build_networks(source: Source, *, masked: bool, round_to: int | None) -> Networks:
    """Zero the pruned groups of each state (the masked reference), then shrink each with the same groups.

    With --round-to, restored groups keep their checkpoint values in both networks, so they stay equal.
    """
    from compressor.prune import build_groups
    from compressor.prune.shrink import pruned_spec, shrink

    model = source.session.model.cpu().eval()
    example = source.session.example_input.cpu()
    model.load_state_dict(source.weights)
    groups = pruned = unrounded = None
    spec = source.spec
    if spec and spec.get("pruned"):
        try:
            groups = build_groups(model, example, spec["granularity"])
            pruned = unrounded = groups.select(spec["pruned"])
        except (KeyError, ValueError) as exc:
            raise ExportError(f"the checkpoint's pruned spec does not fit {source.recipe.model.name}: {exc}") from None
        if round_to is not None and round_to > 1 and not masked:
            pruned = groups.round_kept(unrounded, multiple=round_to)
    references, exported, changed = [], [], False
    for state in source.states:
        model.load_state_dict(state)
        if groups is not None:
            before = _nonzero(model)
            groups.zero_(pruned)
            changed |= _nonzero(model) != before
        references.append(copy.deepcopy(model).eval())
        if groups is not None and not masked:
            exported.append(shrink(model, groups, pruned).eval())
    if not exported:
        exported = references
    bma = source.checkpoint == "samples"
    out_spec = pruned_spec(groups, pruned) if groups is not None and not masked else None
    return Networks(
        reference=Ensemble(references) if bma else references[0],
        exported=Ensemble(exported) if bma else exported[0],
        groups=groups, pruned=pruned, pruned_unrounded=unrounded, spec=out_spec,
        masking_changed_weights=changed,
    )
