"""Folders of image files, ImageNet style: `root/train/<class>/*`, `root/val/<class>/*`, or just `root/<class>/*`.

Every image is decoded the same way: shorter side resized to `image_size`, centre-cropped to a square, RGB.
Without `image_size` the size is the images' own (median shorter side of a sample, at most 224).
Small sets (decoded < 2 GiB) are decoded once into a uint8 tensor; larger ones are decoded per batch.
Unreadable files are skipped with a warning unless they are over 1 % of the chosen images (then DataError);
uncached sets are checked by header only, and a file that still fails to decode later raises DataError.
Training augmentation (default on): below 64 px a pad-crop (size/8 px) + flip, as for CIFAR; from 64 px a
random-resized crop + flip. Normalisation: ImageNet constants from 64 px (pretrained torchvision weights
expect them), otherwise mean/std measured on the training images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compressor.data.bundle import DataBundle, DataOptions
from compressor.data.split import STATS_STREAM, stream_rng, train_val_indices
from compressor.data.tensors import (
    Augmentation,
    BatchDataset,
    ImageTensorDataset,
    Normalise,
    PadCrop,
    ResizedCrop,
    channel_stats,
    labels_tensor,
)
from compressor.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
DEFAULT_IMAGE_SIZE = 224  # the largest size chosen for the user; larger images are shrunk to it
SIZE_PROBE = 64  # images whose headers decide the default size
UPSCALE_WARNING = 2.0
LARGE_IMAGE_SIZE = 64
CACHE_AUTO_BYTES = 2 << 30
MAX_UNREADABLE_FRACTION = 0.01
STATS_SAMPLE = 1000
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# What PIL raises for unreadable, truncated or hostile files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode(path: str, size: int) -> np.ndarray:
    """One image as (3, size, size) uint8: shorter side resized to `size`, then centre-cropped."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: let libjpeg shrink while decoding (never below size)
        rgb = img.convert("RGB")
    width, height = rgb.size
    if (width, height) != (size, size):
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        left, top = (new_w - size) // 2, (new_h - size) // 2
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))
    return np.asarray(rgb).transpose(2, 0, 1)


def _check_header(path: str) -> None:
    with Image.open(path):
        pass


def _run_parallel(work: Callable[[int], None], count: int) -> None:
    """work(i) for every i on a thread pool, in chunks: PIL releases the GIL while it decodes."""
    chunks = [range(start, min(start + 256, count)) for start in range(0, count, 256)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda chunk: [work(i) for i in chunk], chunks):
            pass


def decode_all(paths: list[str], size: int) -> tuple[np.ndarray, dict[int, str]]:
    """All images as (N, 3, size, size) uint8, plus {index: reason} for those that could not be read."""
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failed: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i] = decode(paths[i], size)
        except DECODE_ERRORS as exc:
            failed[i] = str(exc) or type(exc).__name__

    _run_parallel(work, len(paths))
    return out, failed


def check_all(paths: list[str]) -> dict[int, str]:
    """{index: reason} for files PIL cannot even identify; cheap (headers only) for sets too big to decode."""
    failed: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            _check_header(paths[i])
        except DECODE_ERRORS as exc:
            failed[i] = str(exc) or type(exc).__name__

    _run_parallel(work, len(paths))
    return failed


class ImageFileDataset(BatchDataset):
    """Images decoded from disk per batch, for sets too large to hold decoded in memory."""

    def __init__(
        self,
        paths: list[str],
        labels: torch.Tensor,
        size: int,
        normalise: Normalise,
        augment: Augmentation | None,
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.size = size
        self.normalise = normalise
        self.augment = augment

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = index.tolist()
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        for j, i in enumerate(rows):
            try:
                out[j] = decode(self.paths[i], self.size)
            except DECODE_ERRORS as exc:
                raise DataError(f"cannot read image {self.paths[i]}: {exc}") from None
        x = torch.from_numpy(out)
        if self.augment is not None:
            x = self.augment(x)
        return self.normalise(x), self.labels[index]


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Image paths under each class folder (recursively, sorted) and their labels."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, files in os.walk(folder / name, followlinks=True)
            for f in files
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        )
        paths.extend(found)
        labels.extend([label] * len(found))
    return paths, np.asarray(labels, dtype=np.int64)


def typical_side(paths: list[str]) -> int | None:
    """The median shorter side of up to SIZE_PROBE images spread over the listing (headers only)."""
    step = max(1, len(paths) // SIZE_PROBE)
    sides = []
    for path in paths[::step][:SIZE_PROBE]:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except DECODE_ERRORS:
            continue
    return int(np.median(sides)) if sides else None


def choose_size(requested: int | None, paths: list[str]) -> tuple[int, list[str]]:
    """The side images are resized to, and what to tell the user about it: unset, the images' own (median
    shorter side, at most 224: 32 px CIFAR JPEGs stay 32 px instead of costing ~50x the compute at 224);
    set to more than twice the images' side, a warning that upscaling adds compute and no detail."""
    side = typical_side(paths)
    if requested is None:
        size = min(DEFAULT_IMAGE_SIZE, side or DEFAULT_IMAGE_SIZE)
        why = (f"the images' median shorter side is {side} px" + (", capped at 224" if side > size else "")
               if side else "no image could be measured")
        return size, [(f"imagefolder: images are used at {size}x{size} px ({why}); set data.image_size to "
                      "change it")]
    if side and requested > UPSCALE_WARNING * side:
        return requested, [(f"imagefolder: data.image_size {requested} upscales images whose median shorter side "
                           f"is {side} px {requested / side:.1f}x: about {(requested / side) ** 2:.0f}x the "
                           f"compute for no new detail; set data.image_size={side} unless the model needs more")]
    return requested, []


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(train folder, val folder or None): `root/train` + optional `root/val`, else `root` is the train set."""
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder")
    if (root / "train").is_dir():
        val = root / "val"
        return root / "train", val if val.is_dir() else None
    return root, None


def _read_listing(root: Path) -> tuple[list[str], list[str], np.ndarray, list[str] | None, np.ndarray | None]:
    train_dir, val_dir = _layout(root)
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError(
            f"imagefolder: {train_dir} has no class folders (expected {train_dir}/<class>/<images>)"
        )
    train_paths, train_labels = _scan(train_dir, classes)
    counts = np.bincount(train_labels, minlength=len(classes))
    if (counts == 0).any():
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        raise DataError(f"imagefolder: class folder(s) with no images in {train_dir}: {', '.join(empty[:5])}")
    if val_dir is None:
        return classes, train_paths, train_labels, None, None
    unknown = sorted(set(_class_folders(val_dir)) - set(classes))
    if unknown:
        raise DataError(
            f"imagefolder: {val_dir} has class folders not in {train_dir}: {', '.join(unknown[:5])}"
        )
    val_paths, val_labels = _scan(val_dir, classes)
    if not val_paths:
        raise DataError(f"imagefolder: {val_dir} has no images")
    return classes, train_paths, train_labels, val_paths, val_labels


def _drop_unreadable(failed: dict[int, str], paths: list[str], total: int, root: Path) -> list[str]:
    """Warnings for a few unreadable files; a DataError when so many fail that the folder is likely wrong."""
    if not failed:
        return []
    first = paths[min(failed)]
    if len(failed) > MAX_UNREADABLE_FRACTION * total:
        raise DataError(
            f"imagefolder: {len(failed)} of {total} images under {root} are unreadable "
            f"(more than {MAX_UNREADABLE_FRACTION:.0%}), e.g. {first}: {failed[min(failed)]}"
        )
    examples = ", ".join(paths[i] for i in sorted(failed)[:3])
    return [f"skipped {len(failed)} unreadable image(s) of {total} under {root}: {examples}"]


def build(cfg: DataOptions, *, seed: int) -> DataBundle:
    """Decode (or index) the chosen files, drop unreadable ones (up to 1 %), and pick augmentation/normalisation."""
    if cfg.root is None:
        raise DataError("imagefolder: data.root is not set (a folder of <class>/<image> folders)")
    root = Path(cfg.root).expanduser()
    classes, all_train, all_train_labels, all_val, all_val_labels = _read_listing(root)
    size, size_notes = choose_size(cfg.image_size, all_train)
    train_idx, val_idx = train_val_indices(cfg, seed, all_train_labels, all_val_labels, f"imagefolder {root}")
    val_source, val_source_labels = (
        (all_train, all_train_labels) if all_val is None else (all_val, all_val_labels)
    )
    paths = [all_train[i] for i in train_idx] + [val_source[i] for i in val_idx]
    labels = np.concatenate([all_train_labels[train_idx], val_source_labels[val_idx]])
    n_train = len(train_idx)

    cache = cfg.cache if cfg.cache is not None else len(paths) * 3 * size * size < CACHE_AUTO_BYTES
    images, failed = decode_all(paths, size) if cache else (None, check_all(paths))
    warnings = size_notes + _drop_unreadable(failed, paths, len(paths), root)
    keep = np.setdiff1d(np.arange(len(paths)), np.fromiter(failed, dtype=np.int64, count=len(failed)))
    keep_train, keep_val = keep[keep < n_train], keep[keep >= n_train]
    if len(keep_train) == 0 or len(keep_val) == 0:
        raise DataError(f"imagefolder: no readable images left in the train or eval split under {root}")

    if size >= LARGE_IMAGE_SIZE:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        augment: Augmentation = ResizedCrop()
    else:
        if images is not None:
            mean, std = channel_stats(images[keep_train], 255.0)
        else:
            mean, std = channel_stats(_stats_sample([paths[i] for i in keep_train], size, seed), 255.0)
        augment = PadCrop(pad=max(1, size // 8), flip=True)
    train_augment = augment if cfg.augment is not False else None
    normalise = Normalise(255.0, mean, std)
    y = labels_tensor(labels)
    train: BatchDataset
    val: BatchDataset
    if images is not None:
        pixels = torch.from_numpy(images)
        train = ImageTensorDataset(pixels[keep_train], y[keep_train], normalise, train_augment)
        val = ImageTensorDataset(pixels[keep_val], y[keep_val], normalise, None)
    else:
        train = ImageFileDataset(
            [paths[i] for i in keep_train], y[keep_train], size, normalise, train_augment
        )
        val = ImageFileDataset([paths[i] for i in keep_val], y[keep_val], size, normalise, None)
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(classes),
        input_shape=(3, size, size),
        mean=list(mean),
        std=list(std),
        classes=classes,
        kind="image",
        warnings=warnings,
    )


def _stats_sample(paths: list[str], size: int, seed: int) -> np.ndarray:
    """A seeded sample of decoded training images, enough for stable per-channel statistics."""
    rng = stream_rng(seed, STATS_STREAM)
    chosen = rng.choice(len(paths), size=min(STATS_SAMPLE, len(paths)), replace=False)
    images, failed = decode_all([paths[i] for i in chosen], size)
    return np.delete(images, list(failed), axis=0)
