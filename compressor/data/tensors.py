"""In-memory datasets that build whole batches with tensor ops (no per-item PIL), for training throughput.

A DataLoader calls `__getitems__` with a batch of indices, so augmentation and normalisation run once per
batch; a hand-rolled loop can call `batch(indices)` directly. Everything here pickles (spawned workers).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


@dataclass(frozen=True)
class PadCrop:
    """Random crop after zero-padding by `pad` pixels, and (if `flip`) a horizontal flip half the time.

    The standard CIFAR recipe; used for small images, where a resized crop would throw away too much.
    """

    pad: int
    flip: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a (B, C, H, W) batch of any dtype; each image gets its own offsets, in one gather."""
        b, c, h, w = images.shape
        device = images.device
        p = self.pad
        padded = F.pad(images, (p, p, p, p)) if p else images
        rows = torch.randint(0, 2 * p + 1, (b, 1), device=device) + torch.arange(h, device=device)
        cols = torch.randint(0, 2 * p + 1, (b, 1), device=device) + torch.arange(w, device=device)
        if self.flip:
            cols = torch.where(torch.rand(b, 1, device=device) < 0.5, cols.flip(1), cols)
        flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


@dataclass(frozen=True)
class ResizedCrop:
    """Random-resized crop (torchvision's defaults: area 8-100 %, aspect 3/4-4/3) plus horizontal flip.

    Done for the whole batch with one affine grid_sample; output is float pixels, same size as the input.
    """

    min_area: float = 0.08
    max_log_ratio: float = math.log(4 / 3)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        device = images.device
        area = torch.empty(b, device=device).uniform_(self.min_area, 1.0)
        ratio = torch.empty(b, device=device).uniform_(-self.max_log_ratio, self.max_log_ratio).exp()
        width = (area * ratio).sqrt().clamp_max(1.0)
        height = (area / ratio).sqrt().clamp_max(1.0)
        centre_x = (torch.rand(b, device=device) * 2 - 1) * (1 - width)
        centre_y = (torch.rand(b, device=device) * 2 - 1) * (1 - height)
        sign = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = width * sign
        theta[:, 0, 2] = centre_x
        theta[:, 1, 1] = height
        theta[:, 1, 2] = centre_y
        x = images.to(torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


Augmentation = PadCrop | ResizedCrop


class Normalise:
    """Raw pixels (0..scale) -> (x / scale - mean) / std per channel, folded into one subtract and divide."""

    def __init__(self, scale: float, mean: Sequence[float], std: Sequence[float]) -> None:
        self.shift = (torch.tensor(mean, dtype=torch.float32) * scale).view(-1, 1, 1)
        self.divisor = (torch.tensor(std, dtype=torch.float32) * scale).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        return (x - self.shift.to(x.device)) / self.divisor.to(x.device)


class BatchDataset(Dataset[tuple[torch.Tensor, int]], ABC):
    """Map-style dataset whose single-item and DataLoader paths both go through one `batch` method."""

    labels: torch.Tensor

    @abstractmethod
    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, ...) float32 and labels (B,) int64 for a 1-D tensor of indices."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(torch.as_tensor(indices, dtype=torch.long))
        return list(zip(x.unbind(0), y.tolist(), strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([index], dtype=torch.long))
        return x[0], int(y[0])


class ImageTensorDataset(BatchDataset):
    """Decoded images kept as one uint8 tensor (4x smaller than float), normalised per batch."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, normalise: Normalise, augment: Augmentation | None
    ) -> None:
        self.images = images
        self.labels = labels
        self.normalise = normalise
        self.augment = augment

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index]
        if self.augment is not None:
            x = self.augment(x)
        return self.normalise(x), self.labels[index]


class TabularDataset(BatchDataset):
    """Feature rows already standardised at build time; nothing to do per batch but index."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]


def channel_stats(images: np.ndarray | torch.Tensor, scale: float) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) raw pixels divided by `scale`, in chunks to bound memory."""
    data = torch.as_tensor(images)
    channels = data.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(data), 4096):
        chunk = data[start : start + 4096].to(torch.float64) / scale
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = data.numel() / channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def labels_tensor(labels: np.ndarray) -> torch.Tensor:
    """Labels as int64, the dtype cross-entropy expects, so collate never has to convert."""
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))
