"""`compressor eval`: score a run's last checkpoint, or a model file written by `compressor export`, on the
evaluation split its stored recipe describes (plus --set overrides). A --bma model file averages its
samples' softmax, as its ONNX graph does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from compressor import metrics as M
from compressor.engine.session import build_session, resolve_device
from compressor.errors import RunDirError
from compressor.recipe import apply_overrides, stored_recipe, validate_recipe
from compressor.storage.checkpoint import load_checkpoint
from compressor.storage.modelfile import load_model_file


def evaluate_run(path: Path, overrides: list[str], device: str = "auto") -> dict[str, Any]:
    """Accuracy, NLL, ECE, Brier (and a title line) of a run directory or an exported `.pt` model file."""
    path = Path(path)
    networks: list[nn.Module] | None = None
    if path.suffix == ".pt" and path.is_file():
        payload, networks = load_model_file(path)
        stored, where = payload["recipe"], f"{path} (stored recipe)"
        kind = f"BMA of {len(networks)} samples" if "samples" in payload else "exported model"
        label = f"{path.name}: {kind}, {payload['model']}"
    else:
        recipe_path = path / "recipe.yaml"
        if not recipe_path.is_file():
            raise RunDirError(f"{path}: not a run directory (no recipe.yaml)")
        stored, where = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}, str(recipe_path)
    data, origin = apply_overrides(stored_recipe(stored), overrides)
    recipe = validate_recipe(data, where=where, origin=origin)
    if networks is None:
        state = load_checkpoint(path / "checkpoints" / "last.pt")
    dev = resolve_device(device if device != "auto" else recipe.train.device)
    session = build_session(recipe, dev)
    if networks is None:
        session.model.load_state_dict(state["model"])
        networks, label = [session.model], f"{path.name}: {recipe.model.name}"
    elif session.data.num_classes != payload["num_classes"]:
        raise RunDirError(f"{path}: the model has {payload['num_classes']} classes, the data "
                          f"{session.data.num_classes}")
    outputs = [M.predict_probs(network.to(dev), session.val_loader, dev) for network in networks]
    labels = outputs[0][1]
    result = M.classification_metrics(torch.stack([p for p, _ in outputs]).mean(dim=0), labels, recipe.eval.bins)
    result["title"] = f"{label} on {recipe.data.name} ({len(labels)} examples)"
    return result
