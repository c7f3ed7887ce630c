"""Checks that stop a run early and say why: a NaN/inf loss or weight, and too little disk for checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from compressor.errors import RunDirError
from compressor.recipe import Recipe


class NonFiniteWatch:
    """Was a loss NaN/inf? On CUDA the answer is read one step late, so checking never stalls the queue."""

    def __init__(self, device: torch.device) -> None:
        self.lagged = device.type == "cuda"
        self.flag = torch.zeros((), dtype=torch.bool, pin_memory=self.lagged)
        self.ready = torch.cuda.Event() if self.lagged else None

    def seen(self, loss_sum: Tensor) -> bool:
        bad = ~torch.isfinite(loss_sum)
        if self.ready is None:
            return bool(bad)
        self.ready.synchronize()
        previous = bool(self.flag)
        self.flag.copy_(bad, non_blocking=True)
        self.ready.record()
        return previous


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def diverged_message(recipe: Recipe, what: str, where: str) -> str:
    """What went non-finite, where, and which setting to lower."""
    method = recipe.method
    advice = f"lower method.lr (now {method.lr:g})"
    temperature = getattr(method, "temperature", None)
    if temperature is not None:
        advice += f", or method.temperature (now {temperature}) to inject less noise"
    return (f"{what} became NaN/inf by {where}; training stopped and the last good "
            f"checkpoint is kept. To fix it, {advice}")


def checkpoint_bytes_needed(recipe: Recipe, model: nn.Module) -> tuple[int, int]:
    """(bytes, posterior samples): last/previous/best checkpoints plus one being written, each about 3x the
    model state (weights plus up to two optimizer buffers), and one model state per posterior sample."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    samples = getattr(recipe.method, "cycles", 0) * getattr(recipe.method, "samples_per_cycle", 0)
    return 4 * 3 * state + samples * state + (1 << 20), samples


def check_free_space(folder: Path, recipe: Recipe, model: nn.Module) -> None:
    """Refuse before the first step when the run's checkpoints would not fit, not hours later at a save."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    need, samples = checkpoint_bytes_needed(recipe, model)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise RunDirError(f"{folder}: only {free / 2**20:.0f} MiB free, this run needs about {need / 2**20:.0f} "
                          f"MiB (checkpoints and {samples} posterior samples); free some space or use --out "
                          "on another disk")
