"""Datasets by name: `build_data(cfg, seed=...)` turns a recipe's `data:` section into a DataBundle.

Each kind lives in its own module; they share seeded stratified splitting (split.py) and batch-at-once
tensor datasets (tensors.py). Every user mistake surfaces as a one-line `DataError`.
"""

from __future__ import annotations

from collections.abc import Callable

from compressor.data import cifar, digits, imagefolder, npz
from compressor.data.bundle import DataBundle, DataOptions
from compressor.errors import DataError

__all__ = ["DATASETS", "DataBundle", "DataOptions", "build_data"]

_BUILDERS: dict[str, Callable[..., DataBundle]] = {
    "digits": digits.build,
    "cifar10": cifar.build,
    "cifar100": cifar.build,
    "imagefolder": imagefolder.build,
    "npz": npz.build,
}
DATASETS: tuple[str, ...] = tuple(_BUILDERS)


def build_data(cfg: DataOptions, *, seed: int) -> DataBundle:
    """The same cfg and seed always give the same splits and subsets (augmentation draws from torch's RNG)."""
    builder = _BUILDERS.get(cfg.name)
    if builder is None:
        raise DataError(f"unknown dataset {cfg.name!r}; known: {', '.join(DATASETS)}")
    return builder(cfg, seed=seed)
