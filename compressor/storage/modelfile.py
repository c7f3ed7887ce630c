"""The PyTorch model saved next to an ONNX export (`<stem>.pt`), so a shrunk network can be fine-tuned
or scored (`compressor eval PATH.pt`) without its run directory.

Plain dicts, lists, numbers and tensors only, so it loads with `weights_only=True`. A shrunk state dict has
smaller tensors than the architecture builds, so the file carries the `pruned_spec` that
`prune.shrink.rebuild` re-applies to a freshly built model before the weights load.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import RunDirError

FORMAT = 1
_REQUIRED = ("format", "model", "options", "num_classes", "input_shape", "pruned_spec", "recipe")


def model_file_payload(
    *,
    recipe: dict[str, Any],
    model_name: str,
    options: dict[str, Any],
    num_classes: int,
    input_shape: list[int],
    spec: dict[str, Any] | None,
    members: list[nn.Module],
    bma: bool,
    extra: dict[str, Any],
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "format": FORMAT, "model": model_name, "options": options, "num_classes": num_classes,
        "input_shape": list(input_shape), "pruned_spec": spec, "recipe": recipe, **extra,
    }
    if bma:
        payload["samples"] = [m.state_dict() for m in members]
    else:
        payload["state_dict"] = members[0].state_dict()
    return payload


def load_model_file(path: Path) -> tuple[dict[str, Any], list[nn.Module]]:
    """(payload, networks): one network, or one per posterior sample of a --bma export, in eval mode."""
    from compressor.models import create_model
    from compressor.prune.shrink import rebuild

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for truncated or garbage files)
        raise RunDirError(f"{path}: unreadable model file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        raise RunDirError(f"{path}: not an exported compressor model (expected the .pt written by "
                          "`compressor export`)")
    if payload["format"] != FORMAT:
        raise RunDirError(f"{path}: unsupported model file format {payload['format']!r} (expected {FORMAT})")
    shape = tuple(payload["input_shape"])
    model = create_model(payload["model"], num_classes=payload["num_classes"], input_shape=shape,
                         **payload["options"])
    if payload["pruned_spec"] is not None:
        try:
            rebuild(model, torch.zeros(1, *shape), payload["pruned_spec"])
        except ValueError as exc:
            raise RunDirError(f"{path}: {exc}") from None
    states = payload.get("samples") or [payload.get("state_dict")]
    networks = []
    for state in states:
        member = copy.deepcopy(model)
        try:
            member.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            reason = str(exc).strip().splitlines()[0]
            raise RunDirError(f"{path}: the weights do not fit the rebuilt model ({reason})") from None
        networks.append(member.eval())
    return payload, networks


def evaluate_model_file(path: Path, overrides: list[str], device: str = "auto") -> dict[str, Any]:
    """Score an exported model on its run's evaluation split (the stored recipe, plus --set overrides);
    a --bma export averages its samples' softmax, like the ONNX graph does."""
    from compressor import metrics as M
    from compressor.engine.trainer import build_session, resolve_device
    from compressor.recipe import apply_overrides, validate_recipe

    payload, networks = load_model_file(path)
    data, origin = apply_overrides(payload["recipe"], overrides)
    recipe = validate_recipe(data, where=f"{path} (stored recipe)", origin=origin)
    dev = resolve_device(device if device != "auto" else recipe.train.device)
    session = build_session(recipe, dev)
    if session.data.num_classes != payload["num_classes"]:
        raise RunDirError(f"{path}: the model has {payload['num_classes']} classes, the data "
                          f"{session.data.num_classes}")
    outputs = [M.predict_probs(network.to(dev), session.val_loader, dev) for network in networks]
    labels = outputs[0][1]
    probs = torch.stack([p for p, _ in outputs]).mean(dim=0)
    result = M.classification_metrics(probs, labels, recipe.eval.bins)
    kind = f"BMA of {len(networks)} samples" if "samples" in payload else "exported model"
    result["title"] = (f"{Path(path).name}: {kind}, {payload['model']} on {recipe.data.name} "
                       f"({len(labels)} examples)")
    return result
