"""`compressor eval`: rebuild a run's data and model from its stored recipe and score its last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compressor import metrics as M
from compressor.storage.checkpoint import load_checkpoint
from compressor.engine.trainer import build_session, resolve_device
from compressor.errors import RunDirError
from compressor.recipe import apply_overrides, validate_recipe


def evaluate_run(run_dir: Path, overrides: list[str], device: str = "auto") -> dict[str, Any]:
    run_dir = Path(run_dir)
    if run_dir.suffix == ".pt" and run_dir.is_file():  # a model written by `compressor export`
        from compressor.storage.modelfile import evaluate_model_file

        return evaluate_model_file(run_dir, overrides, device)
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no recipe.yaml)")
    data, origin = apply_overrides(yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}, overrides)
    recipe = validate_recipe(data, where=str(recipe_path), origin=origin)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    dev = resolve_device(device if device != "auto" else recipe.train.device)
    session = build_session(recipe, dev)
    session.model.load_state_dict(state["model"])
    probs, labels = M.predict_probs(session.model, session.val_loader, dev)
    result = M.classification_metrics(probs, labels, recipe.eval.bins)
    result["title"] = f"{run_dir.name}: {recipe.model.name} on {recipe.data.name} ({len(labels)} examples)"
    return result
