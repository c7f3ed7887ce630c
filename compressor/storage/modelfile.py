"""The PyTorch model file saved next to an ONNX export (`<stem>.pt`), so a shrunk network can be fine-tuned
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
from compressor.storage.checkpoint import load_torch_file

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
    from compressor.prune import rebuild

    path = Path(path)
    payload = load_torch_file(path, "model file")
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
