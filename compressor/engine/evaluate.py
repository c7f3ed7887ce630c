"""`compressor eval`: score a run's checkpoint (last, best or one posterior sample) and, when the run collected
posterior samples, their Bayesian model average; or a model file written by `compressor export` (a --bma one
averages its samples' softmax, as its ONNX graph does). The evaluation split is the one the stored recipe
describes, plus --set overrides. (ONNX files are scored by `compressor.export.evaluate`.)"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from compressor import metrics as M
from compressor.engine.session import Session, build_session, resolve_device
from compressor.errors import RecipeError, RunDirError
from compressor.recipe import Recipe, apply_overrides, stored_recipe, validate_recipe
from compressor.storage.checkpoint import load_checkpoint, load_sample
from compressor.storage.modelfile import load_model_file

CHECKPOINTS = "last, best or sample-K"


def _weights(run_dir: Path, checkpoint: str) -> dict[str, torch.Tensor]:
    if checkpoint in ("last", "best"):
        path = run_dir / "checkpoints" / f"{checkpoint}.pt"
        if not path.is_file():
            raise RunDirError(f"{run_dir}: no {checkpoint}.pt checkpoint (a run writes one after its first epoch)")
        return load_checkpoint(path)["model"]
    match = re.fullmatch(r"sample-(\d+)", checkpoint)
    if match is None:
        raise RecipeError(f"--checkpoint {checkpoint}: expected {CHECKPOINTS}")
    path = run_dir / "samples" / f"sample-{int(match.group(1)):03d}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in (run_dir / "samples").glob("sample-*.pt"))
        raise RunDirError(f"{path}: no such posterior sample (the run has: {', '.join(have) or 'none'})")
    return load_sample(path)


def _score(networks: list[nn.Module], session: Session, device: torch.device, bins: int) -> dict[str, Any]:
    """Metrics of the networks' averaged softmax on the evaluation split."""
    outputs = [M.predict_probs(network.to(device), session.val_loader, device) for network in networks]
    probs = torch.stack([p for p, _ in outputs]).mean(dim=0)
    return M.classification_metrics(probs, outputs[0][1], bins)


def _run_recipe(run_dir: Path, overrides: list[str]) -> Recipe:
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        hint = " (an exported model: pass its .pt or .onnx file)" if run_dir.suffix else ""
        raise RunDirError(f"{run_dir}: not a run directory (no recipe.yaml){hint}")
    stored = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    data, origin = apply_overrides(stored_recipe(stored), overrides)
    return validate_recipe(data, where=str(recipe_path), origin=origin)


def _posterior(run_dir: Path, session: Session, device: torch.device, bins: int) -> dict[str, Any] | None:
    """BMA of every posterior sample the run collected (None when it collected none)."""
    paths = sorted((run_dir / "samples").glob("sample-*.pt"))
    if not paths:
        return None
    members = []
    for path in paths:
        member = copy.deepcopy(session.model).eval()
        member.load_state_dict(load_sample(path))
        members.append(member)
    result = _score(members, session, device, bins)
    result["samples"] = len(paths)
    return result


def evaluate_run(path: Path, overrides: list[str], device: str = "auto", checkpoint: str = "last",
                 bma: bool = True) -> dict[str, Any]:
    """Accuracy, NLL, ECE, Brier (plus `n`, `reliability`, a `title` and `bma`: the posterior average's, or
    None) of a run directory's checkpoint or an exported `.pt` model file."""
    path = Path(path)
    if path.suffix == ".pt" and path.is_file():
        if checkpoint != "last":
            raise RecipeError(f"--checkpoint {checkpoint}: a model file holds one network (or its BMA samples); "
                              "--checkpoint applies to run directories")
        return _evaluate_model_file(path, overrides, device)
    recipe = _run_recipe(path, overrides)
    weights = _weights(path, checkpoint)
    dev = resolve_device(device if device != "auto" else recipe.train.device)
    session = build_session(recipe, dev)
    session.model.load_state_dict(weights)
    result = _score([session.model.eval()], session, dev, recipe.eval.bins)
    result["bma"] = _posterior(path, session, dev, recipe.eval.bins) if bma and checkpoint in ("last", "best") \
        else None
    result["checkpoint"] = checkpoint
    result["title"] = f"{path.name}: {recipe.model.name} on {recipe.data.name} ({result['n']} examples)"
    return result


def _evaluate_model_file(path: Path, overrides: list[str], device: str) -> dict[str, Any]:
    payload, networks = load_model_file(path)
    data, origin = apply_overrides(stored_recipe(payload["recipe"]), overrides)
    recipe = validate_recipe(data, where=f"{path} (stored recipe)", origin=origin)
    dev = resolve_device(device if device != "auto" else recipe.train.device)
    session = build_session(recipe, dev)
    if session.data.num_classes != payload["num_classes"]:
        raise RunDirError(f"{path}: the model has {payload['num_classes']} classes, the data "
                          f"{session.data.num_classes}")
    result = _score(networks, session, dev, recipe.eval.bins)
    kind = f"BMA of {len(networks)} samples" if "samples" in payload else "exported model"
    result.update(bma=None, checkpoint=kind,
                  title=f"{path.name}: {kind}, {payload['model']} on {recipe.data.name} ({result['n']} examples)")
    return result
