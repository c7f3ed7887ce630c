"""scikit-learn's bundled 8x8 digits: a dataset that needs no files, for smoke runs and tests.

No augmentation by default: 8x8 images leave no room to crop, and a flipped digit is a different shape.
When `augment: true`, a 1-pixel pad-crop without flipping is used.
"""

from __future__ import annotations

import numpy as np
import torch

from compressor.data.bundle import DataBundle, DataOptions
from compressor.data.split import train_val_indices
from compressor.data.tensors import ImageTensorDataset, Normalise, PadCrop, channel_stats, labels_tensor

PIXEL_MAX = 16.0


def build(cfg: DataOptions, *, seed: int) -> DataBundle:
    """Hold out `val_split` stratified by the seed; mean/std come from the training pixels."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.astype(np.uint8)[:, None, :, :]
    labels = np.asarray(raw.target, dtype=np.int64)
    train_idx, val_idx = train_val_indices(cfg, seed, labels, None, "digits")
    mean, std = channel_stats(images[train_idx], PIXEL_MAX)
    normalise = Normalise(PIXEL_MAX, mean, std)
    augment = PadCrop(pad=1, flip=False) if cfg.augment else None
    return DataBundle(
        train=ImageTensorDataset(
            torch.from_numpy(images[train_idx]), labels_tensor(labels[train_idx]), normalise, augment
        ),
        val=ImageTensorDataset(
            torch.from_numpy(images[val_idx]), labels_tensor(labels[val_idx]), normalise, None
        ),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=mean,
        std=std,
        classes=[str(d) for d in range(10)],
        kind="image",
    )
