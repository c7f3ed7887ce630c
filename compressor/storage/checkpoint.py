"""Checkpoints and posterior samples: atomic writes, a SHA-256 over the payload, and loading with
`weights_only=True` (one loader for every torch file compressor reads back).

The payload (plain dicts, tensors and numbers only) is serialised once, hashed, and stored as a uint8
tensor next to its digest; a truncated or altered file fails the hash and is refused. Each save keeps
the previous good checkpoint as `previous.pt`, so a crash mid-write never leaves a run without one.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from compressor.errors import RunDirError

FORMAT = 1


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(payload: dict[str, Any], path: Path, *, keep_previous: bool = True) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    blob = buf.getvalue()
    wrapped = {
        "format": FORMAT,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous and path.exists():
        os.replace(path, path.with_name("previous.pt"))
    atomic_torch_save(wrapped, path)


def _previous_hint(path: Path) -> str:
    previous = path.with_name("previous.pt")
    return f"; {previous.name} beside it holds the checkpoint before" if path != previous and previous.is_file() else ""


def load_torch_file(path: Path, what: str, hint: str = "") -> Any:
    """`torch.load(weights_only=True)` on CPU, or RunDirError naming the file and why (missing, truncated or
    not a torch file); `what` names the kind of file for the message."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for truncated or garbage files)
        raise RunDirError(f"{path}: unreadable {what} ({exc.__class__.__name__}){hint}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify; raise RunDirError with a one-line reason for a missing, truncated or altered file."""
    path = Path(path)
    wrapped = load_torch_file(path, "checkpoint", f"; it may be truncated{_previous_hint(path)}")
    if not isinstance(wrapped, dict) or wrapped.get("format") != FORMAT or "payload" not in wrapped:
        raise RunDirError(f"{path}: not a compressor checkpoint")
    blob = wrapped["payload"].numpy().tobytes()
    if hashlib.sha256(blob).hexdigest() != wrapped.get("sha256"):
        raise RunDirError(f"{path}: checksum mismatch, the checkpoint was altered or truncated"
                          f"{_previous_hint(path)}")
    return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)


def load_sample(path: Path) -> dict[str, Any]:
    """A posterior sample's state dict (samples/sample-NNN.pt, written by the Bayesian methods)."""
    sample = load_torch_file(path, "posterior sample")
    if not isinstance(sample, dict) or not isinstance(sample.get("model"), dict):
        raise RunDirError(f"{path}: not a posterior sample (expected a dict with a 'model' state dict)")
    return sample["model"]
