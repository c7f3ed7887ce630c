"""CIFAR-10/100 read straight from torchvision's on-disk python pickles into one uint8 tensor.

Reading the batches with numpy is much faster than torchvision's per-item PIL path, and the tensor
augmentation (4 px pad-crop + horizontal flip, the standard CIFAR recipe) is on by default.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compressor.data.bundle import DataBundle, DataOptions
from compressor.data.split import train_val_indices
from compressor.data.tensors import ImageTensorDataset, Normalise, PadCrop, labels_tensor
from compressor.errors import DataError


@dataclass(frozen=True)
class _Variant:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    downloader: str


VARIANTS = {
    "cifar10": _Variant(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        downloader="CIFAR10",
    ),
    "cifar100": _Variant(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        downloader="CIFAR100",
    ),
}

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR files are pickles; allow only what numpy arrays need, so a hostile file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module.startswith("numpy.core"):
            module = _NUMPY_CORE + module.removeprefix("numpy.core")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable CIFAR pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR pickle (expected a dict, found {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _find_folder(root: Path, variant: _Variant, name: str, download: bool) -> Path:
    """The folder holding the batch files: `root/<folder>` as torchvision lays it out, or `root` itself."""
    files = (*variant.train_files, *variant.test_files, variant.meta_file)
    for folder in (root / variant.folder, root):
        if all((folder / f).is_file() for f in files):
            return folder
    if download:
        from torchvision import datasets

        try:
            getattr(datasets, variant.downloader)(str(root), train=True, download=True)
        except (OSError, RuntimeError, ValueError, tarfile.TarError) as exc:  # network, checksum, archive
            raise DataError(f"{name}: could not download into {root} ({type(exc).__name__}: {exc})") from None
        return root / variant.folder
    expected = root / variant.folder
    missing = [f for f in files if not (expected / f).is_file()]
    raise DataError(
        f"{name}: {expected} is missing {', '.join(missing)}; "
        "set data.download: true to fetch it (needs network)"
    )


def _read_split(
    folder: Path, files: tuple[str, ...], label_key: str, num_classes: int
) -> tuple[np.ndarray, ...]:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{path}: missing key 'data' or '{label_key}' (found {sorted(batch)})")
        data = np.asarray(batch["data"])
        y = np.asarray(batch[label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{path}: 'data' must be uint8 of shape (n, 3072), found {data.dtype} {data.shape}"
            )
        if y.shape != (len(data),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{path}: '{label_key}' must be {len(data)} integer labels, found {y.dtype} {y.shape}"
            )
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{path}: '{label_key}' has labels outside 0..{num_classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def build(cfg: DataOptions, *, seed: int) -> DataBundle:
    """`cfg.name` picks CIFAR-10 or CIFAR-100 (fine labels); the test batch is the eval split."""
    variant = VARIANTS[cfg.name]
    if cfg.root is None:
        raise DataError(f"{cfg.name}: data.root is not set (the folder that holds {variant.folder}/)")
    folder = _find_folder(Path(cfg.root).expanduser(), variant, cfg.name, cfg.download)
    meta_path = folder / variant.meta_file
    names = _load_pickle(meta_path).get(variant.names_key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta_path}: missing the class-name list '{variant.names_key}'")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train_x, train_y = _read_split(folder, variant.train_files, variant.label_key, len(classes))
    val_x, val_y = _read_split(folder, variant.test_files, variant.label_key, len(classes))
    train_idx, val_idx = train_val_indices(cfg, seed, train_y, val_y, cfg.name)
    normalise = Normalise(255.0, variant.mean, variant.std)
    augment = PadCrop(pad=4, flip=True) if cfg.augment is not False else None
    return DataBundle(
        train=ImageTensorDataset(
            torch.from_numpy(train_x[train_idx]), labels_tensor(train_y[train_idx]), normalise, augment
        ),
        val=ImageTensorDataset(
            torch.from_numpy(val_x[val_idx]), labels_tensor(val_y[val_idx]), normalise, None
        ),
        num_classes=len(classes),
        input_shape=(3, 32, 32),
        mean=list(variant.mean),
        std=list(variant.std),
        classes=classes,
        kind="image",
    )
