"""`compressor eval FILE.onnx`: score what ships, through onnxruntime, on the evaluation split of the recipe it
was exported from (the `.pt` beside it, else its source run's recipe.yaml), plus --set overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch
import yaml

from compressor import metrics as M
from compressor.engine.session import build_session
from compressor.errors import RunDirError
from compressor.export import onnx as X
from compressor.recipe import apply_overrides, stored_recipe, validate_recipe
from compressor.storage.checkpoint import load_torch_file


def _stored_recipe(path: Path, metadata: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The recipe the file was exported from, and where it was read."""
    beside = path.with_suffix(".pt")
    if beside.is_file():
        payload = load_torch_file(beside, "model file")
        if isinstance(payload, dict) and isinstance(payload.get("recipe"), dict):
            return payload["recipe"], f"{beside} (stored recipe)"
    source = metadata.get("source_run")
    run_recipe = Path(source) / "recipe.yaml" if isinstance(source, str) else None
    if run_recipe is not None and run_recipe.is_file():
        return yaml.safe_load(run_recipe.read_text(encoding="utf-8")) or {}, str(run_recipe)
    raise RunDirError(f"{path}: cannot tell which data it was exported for: neither {beside.name} beside it nor "
                      f"its source run ({source or 'not recorded'}) is there")


def evaluate_onnx(path: Path, overrides: list[str]) -> dict[str, Any]:
    """Accuracy, NLL, ECE, Brier (and `n`, `reliability`, a `title`) of an exported ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001  (protobuf raises several types for a file that is not ONNX)
        raise RunDirError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from None
    metadata = X.read_metadata(proto)
    stored, where = _stored_recipe(path, metadata)
    data, origin = apply_overrides(stored_recipe(stored), overrides)
    recipe = validate_recipe(data, where=where, origin=origin)
    session = build_session(recipe, torch.device("cpu"))
    shape, classes = list(session.data.input_shape), len(session.data.classes)
    if metadata.get("input_size", shape) != shape or len(metadata.get("classes", [None] * classes)) != classes:
        raise RunDirError(f"{path}: exported for inputs {metadata.get('input_size')} and "
                          f"{len(metadata.get('classes', []))} classes, the data has {shape} and {classes}")
    sess = X.session(proto)
    probs, labels = [], []
    for x, y in session.val_loader:
        out = torch.from_numpy(X.run(sess, x))
        probs.append(out if metadata.get("output") == "probs" else out.softmax(dim=1))
        labels.append(torch.as_tensor(y))
    result = M.classification_metrics(torch.cat(probs), torch.cat(labels), recipe.eval.bins)
    samples = metadata.get("samples")
    kind = f"ONNX, BMA of {samples} samples" if samples else f"ONNX, {metadata.get('mode', 'exported')}"
    result.update(bma=None, checkpoint=kind,
                  title=f"{path.name}: {kind}, {metadata.get('model', '?')} on {recipe.data.name} "
                        f"({result['n']} examples, onnxruntime)")
    return result
