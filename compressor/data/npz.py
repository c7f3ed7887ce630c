"""Tabular data from one .npz file: `X` (n, d) numbers, `y` (n,) labels 0..K-1, optional `X_test`/`y_test`.

Features are standardised with the training split's mean/std (a constant feature keeps std 1), and
recorded so export can fold them into the model. No augmentation: there is no label-preserving default.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from compressor.data.bundle import DataBundle, DataOptions
from compressor.data.split import train_val_indices
from compressor.data.tensors import TabularDataset, labels_tensor
from compressor.errors import DataError

ARRAY_NAMES = ("X", "y", "X_test", "y_test")


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz: {path} does not exist or is not a file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path}: not an .npz archive (it holds a single array; use np.savez(path, X=..., y=...))"
            )
        with archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _features(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{path}: array '{name}' must have shape (n, d) with n, d > 0, found {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{path}: array '{name}' must hold real numbers, found dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: array '{name}' contains NaN or infinite values")
    return a.astype(np.float64)


def _labels(path: Path, name: str, a: np.ndarray, rows: int, features: str) -> np.ndarray:
    if a.ndim != 1 or len(a) != rows:
        raise DataError(
            f"{path}: array '{name}' must have shape ({rows},) to match '{features}', found {a.shape}"
        )
    if np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{path}: array '{name}' must hold integer class labels, found dtype {a.dtype}")
    if a.min() < 0:
        raise DataError(f"{path}: array '{name}' has negative label {a.min()} (labels must be 0..K-1)")
    return a.astype(np.int64)


def build(cfg: DataOptions, *, seed: int) -> DataBundle:
    """Validate every array before training, so a bad file fails with its name and the array at fault."""
    if cfg.root is None:
        raise DataError("npz: data.root is not set (the path of the .npz file)")
    if cfg.augment:
        raise DataError("npz: data.augment is not supported for tabular data")
    path = Path(cfg.root).expanduser()
    arrays = _load(path)
    unexpected = sorted(set(arrays) - set(ARRAY_NAMES))
    missing = [n for n in ("X", "y") if n not in arrays]
    if unexpected or missing:
        raise DataError(
            f"{path}: expected arrays X, y and optionally X_test, y_test; "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: X_test and y_test must be given together")
    x = _features(path, "X", arrays["X"])
    y = _labels(path, "y", arrays["y"], len(x), "X")
    num_classes = int(y.max()) + 1
    x_test = y_test = None
    if "X_test" in arrays:
        x_test = _features(path, "X_test", arrays["X_test"])
        if x_test.shape[1] != x.shape[1]:
            raise DataError(f"{path}: 'X_test' has {x_test.shape[1]} features but 'X' has {x.shape[1]}")
        y_test = _labels(path, "y_test", arrays["y_test"], len(x_test), "X_test")
        if y_test.max() >= num_classes:
            raise DataError(
                f"{path}: 'y_test' has label {y_test.max()} but 'y' only has labels 0..{num_classes - 1}"
            )
    train_idx, val_idx = train_val_indices(cfg, seed, y, y_test, f"npz {path}")
    val_x, val_y = (x, y) if x_test is None or y_test is None else (x_test, y_test)

    train_x = x[train_idx]
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std[std == 0] = 1.0
    absent = np.flatnonzero(np.bincount(y[train_idx], minlength=num_classes) == 0)
    warnings = (
        [f"labels {absent.tolist()[:10]} never occur in the training split of {path}"] if len(absent) else []
    )

    def standardised(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return DataBundle(
        train=TabularDataset(standardised(train_x), labels_tensor(y[train_idx])),
        val=TabularDataset(standardised(val_x[val_idx]), labels_tensor(val_y[val_idx])),
        num_classes=num_classes,
        input_shape=(x.shape[1],),
        mean=mean.tolist(),
        std=std.tolist(),
        classes=[str(k) for k in range(num_classes)],
        kind="tabular",
        warnings=warnings,
    )
