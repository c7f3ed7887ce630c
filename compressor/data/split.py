"""Seeded, stratified index selection shared by every dataset kind (hold-out splits and `limit` subsets).

Each use draws from its own random stream, so changing `limit` never changes which examples are held out.
"""

from __future__ import annotations

import numpy as np

from compressor.data.bundle import DataOptions
from compressor.errors import DataError

HOLDOUT_STREAM = 0
TRAIN_LIMIT_STREAM = 1
VAL_LIMIT_STREAM = 2
STATS_STREAM = 3


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose), valid for any int seed."""
    return np.random.default_rng([stream, seed % (1 << 64)])


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Order all indices so that every prefix holds each class in proportion to its frequency.

    Member r (in shuffled order) of a class with n_c members sits at position (r + u_c) / n_c with a random
    per-class phase u_c; sorting by position interleaves the classes evenly, for any prefix length.
    """
    n = len(labels)
    perm = rng.permutation(n)
    _, inverse, counts = np.unique(labels[perm], return_inverse=True, return_counts=True)
    by_class = np.argsort(inverse, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - np.repeat(starts, counts)
    phase = rng.random(len(counts))
    position = (rank + phase[inverse]) / counts[inverse]
    return perm[np.argsort(position, kind="stable")]


def holdout(labels: np.ndarray, fraction: float, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) for data without its own eval split; both sorted, val ~ fraction."""
    n = len(labels)
    n_val = round(fraction * n)
    if not 0.0 < fraction < 1.0 or n_val == 0 or n_val == n:
        raise DataError(
            f"{source}: val_split {fraction} of {n} examples leaves an empty train or eval split "
            "(it has no separate eval split, so val_split must hold out some but not all examples)"
        )
    order = stratified_order(labels, stream_rng(seed, HOLDOUT_STREAM))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def subsample(
    labels: np.ndarray, indices: np.ndarray, limit: int | None, seed: int, stream: int
) -> np.ndarray:
    """At most `limit` of `indices` (sorted), keeping class proportions; all of them when limit is None."""
    if limit is None or limit >= len(indices):
        return indices
    if limit < 1:
        raise DataError(f"limit must be a positive number of examples, got {limit}")
    order = stratified_order(labels[indices], stream_rng(seed, stream))
    return indices[np.sort(order[:limit])]


def train_val_indices(
    cfg: DataOptions, seed: int, train_labels: np.ndarray, val_labels: np.ndarray | None, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Apply val_split (only when there is no separate eval split), limit and val_limit.

    Returned train indices point into `train_labels`; val indices point into `val_labels`, or into
    `train_labels` when `val_labels` is None (the held-out part).
    """
    if len(train_labels) == 0:
        raise DataError(f"{source}: no training examples")
    if val_labels is None:
        train_idx, val_idx = holdout(train_labels, cfg.val_split, seed, source)
        val_source = train_labels
    else:
        train_idx, val_idx = np.arange(len(train_labels)), np.arange(len(val_labels))
        val_source = val_labels
    train_idx = subsample(train_labels, train_idx, cfg.limit, seed, TRAIN_LIMIT_STREAM)
    val_idx = subsample(val_source, val_idx, cfg.val_limit, seed, VAL_LIMIT_STREAM)
    if len(val_idx) == 0:
        raise DataError(f"{source}: the eval split is empty")
    return train_idx, val_idx
