"""What a checkpoint holds and how a run resumes from one: progress counters, every random stream, and the
fallback to `previous.pt` when `last.pt` is missing or corrupt."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compressor.errors import RunDirError
from compressor.storage.checkpoint import load_checkpoint


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch's data order and augmentation derive from (seed, epoch), so a resumed run replays them."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every global random stream, in types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_rest": [np_state["state"]["pos"], np_state["has_gauss"], np_state["gauss"]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, gauss_value = state["numpy_rest"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": state["numpy_key"].numpy().astype(np.uint32),
                         "pos": pos}, "has_gauss": has_gauss, "gauss": gauss_value})
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _empty_partial() -> dict[str, Any]:
    return {"loss": 0.0, "correct": 0.0, "seen": 0}


@dataclass
class Progress:
    """Where a run stands: the counters a checkpoint stores next to the model, the method and the RNGs."""

    epoch: int = 0  # the epoch in progress (0-based), or the number of finished epochs at an epoch boundary
    step_in_epoch: int = 0  # steps of `epoch` already taken (a resume replays the data order past them)
    global_step: int = 0
    train_seconds: float = 0.0
    images_seen: int = 0
    partial: dict[str, Any] = field(default_factory=_empty_partial)  # the epoch's running train loss/accuracy
    last_bma: dict[str, Any] | None = None
    best_accuracy: float = -1.0

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> Progress:
        """The counters a checkpoint holds (an older one without `last_bma` / `best_accuracy` gets the defaults)."""
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})

    def to_checkpoint(self) -> dict[str, Any]:
        return asdict(self)

    def add_epoch_totals(self, loss: float, correct: float, seen: int, seconds: float) -> None:
        self.train_seconds += seconds
        self.images_seen += seen
        self.partial = {"loss": self.partial["loss"] + loss, "correct": self.partial["correct"] + correct,
                        "seen": self.partial["seen"] + seen}

    def start_next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.partial = self.epoch + 1, 0, _empty_partial()


def load_resume_state(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """last.pt, or previous.pt with a warning when last.pt is missing or corrupt (a crash or a full disk
    mid-save); the bad file is moved aside so the next save cannot rotate it over the good one."""
    folder = run_dir / "checkpoints"
    last, previous = folder / "last.pt", folder / "previous.pt"
    try:
        return load_checkpoint(last), []
    except RunDirError as exc:
        if not previous.is_file():
            raise RunDirError(f"{exc}; there is no previous.pt to fall back on") from None
        try:
            state = load_checkpoint(previous)
        except RunDirError as exc2:
            raise RunDirError(f"{exc}, but {exc2}") from None
        note = f"{exc} — resumed from previous.pt instead (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})"
        if last.exists():
            os.replace(last, folder / "last.corrupt.pt")
            note += "; the bad file is kept as last.corrupt.pt"
        return state, [note]
