"""Everything built from a recipe before the first step: device, seeds, data, model and loaders.

Also used by `compressor eval` and `compressor export`, which rebuild a run's data split and dense model from
its stored recipe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Subset

from compressor.data import DataBundle
from compressor.engine.distributed import GlobalBatchSampler, Ranks
from compressor.errors import RunDirError
from compressor.recipe import Recipe


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RunDirError("train.device=cuda but no CUDA device is available (use --device cpu or auto)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Session:
    """Data, model and loaders of one recipe on one device (one process's share under torchrun)."""

    recipe: Recipe
    device: torch.device
    data: DataBundle
    model: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    example_input: torch.Tensor
    sampler: GlobalBatchSampler


def _worker_context() -> Any:
    """Loader workers start from a fresh process, never forked from one whose other threads (the dashboard)
    may hold locks; forkserver makes that cheap by forking each worker from a server with torch loaded."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "compressor.data"])
    return ctx


def _loader_options(recipe: Recipe, device: torch.device) -> dict[str, Any]:
    workers = recipe.data.workers
    if workers is None:
        workers = min(8, mp.cpu_count()) if device.type == "cuda" else 0
    pin = recipe.data.pin_memory if recipe.data.pin_memory is not None else device.type == "cuda"
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        # Not persistent: fresh workers per epoch draw their seeds from the epoch's RNG, so resume is exact.
        options.update(persistent_workers=False, multiprocessing_context=_worker_context())
    return options


def build_model(recipe: Recipe, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """The recipe's dense architecture for data of this shape (its options, `hidden` for mlp)."""
    from compressor.models import create_model

    return create_model(recipe.model.name, num_classes=num_classes, input_shape=input_shape,
                        **recipe.model.builder_options())


def build_session(recipe: Recipe, device: torch.device, ranks: Ranks | None = None) -> Session:
    """Data, model and loaders; with several processes each gets its share of the batches and eval rows."""
    from compressor.data import build_data

    seed_everything(recipe.train.seed)
    data = build_data(recipe.data, seed=recipe.data.split_seed)
    model = build_model(recipe, data.num_classes, tuple(data.input_shape)).to(device)
    if recipe.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ranks = ranks or Ranks()
    loader_kw = _loader_options(recipe, device)
    n_train, batch_size = len(data.train), recipe.train.batch_size
    ranks.check_batch(batch_size, n_train)
    sampler = GlobalBatchSampler(n_train, batch_size, drop_last=n_train > batch_size, rank=ranks.rank,
                                 world=ranks.world)
    train_loader = DataLoader(data.train, batch_sampler=sampler, **loader_kw)
    val = data.val if ranks.world == 1 else Subset(data.val, range(ranks.rank, len(data.val), ranks.world))
    val_loader = DataLoader(val, batch_size=recipe.eval.batch_size, shuffle=False, **loader_kw)
    example = torch.zeros(1, *data.input_shape, device=device)
    return Session(recipe, device, data, model, train_loader, val_loader, example, sampler)
