"""Data loaders on tiny files in their real on-disk formats: shapes, splits, normalisation, augmentation, errors."""

from __future__ import annotations

import pickle
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from compressor.data import DATASETS, DataBundle, build_data
from compressor.data.tensors import ImageTensorDataset, PadCrop
from compressor.errors import DataError


def cfg(name: str, root: Path | str | None = None, **overrides: Any) -> types.SimpleNamespace:
    """The recipe's `data:` section with its defaults, as the pydantic model would hand it over."""
    fields: dict[str, Any] = {
        "name": name,
        "root": None if root is None else str(root),
        "limit": None,
        "val_limit": None,
        "val_split": 0.1,
        "augment": None,
        "download": False,
        "image_size": None,
        "cache": None,
    }
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def stack(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of a dataset through the DataLoader path (which uses __getitems__)."""
    xs, ys = zip(*DataLoader(dataset, batch_size=64, shuffle=False), strict=True)
    return torch.cat(xs), torch.cat(ys)


def assert_augments_train_only(bundle: DataBundle) -> None:
    torch.manual_seed(0)
    index = list(range(min(16, bundle.n_train)))
    first = torch.stack([bundle.train[i][0] for i in index])
    second = torch.stack([bundle.train[i][0] for i in index])
    assert not torch.equal(first, second), "train items should be randomly augmented"
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])
    assert torch.equal(stack(bundle.val)[0], stack(bundle.val)[0])


# ---------------------------------------------------------------- digits


def test_digits_split_shapes_and_normalisation() -> None:
    bundle = build_data(cfg("digits", val_split=0.2), seed=0)
    assert bundle.kind == "image"
    assert bundle.input_shape == (1, 8, 8)
    assert bundle.num_classes == 10
    assert bundle.classes == [str(d) for d in range(10)]
    assert len(bundle.val) == 359
    assert bundle.n_train == 1797 - 359
    x, y = stack(bundle.train)
    assert x.shape == (bundle.n_train, 1, 8, 8)
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    # No augmentation by default, and the recorded mean/std normalise the training pixels.
    assert abs(x.mean().item()) < 1e-4
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(bundle.train[3][0], bundle.train[3][0])
    assert bundle.mean[0] == pytest.approx(0.305, abs=0.01)
    assert isinstance(bundle.train[0][1], int)


def test_digits_split_is_seeded_stratified_and_limited() -> None:
    a = build_data(cfg("digits", val_split=0.2, limit=100, val_limit=50), seed=1)
    b = build_data(cfg("digits", val_split=0.2, limit=100, val_limit=50), seed=1)
    c = build_data(cfg("digits", val_split=0.2, limit=100, val_limit=50), seed=2)
    assert (a.n_train, len(a.val)) == (100, 50)
    assert torch.equal(stack(a.train)[0], stack(b.train)[0])
    assert not torch.equal(stack(a.train)[0], stack(c.train)[0])
    counts = Counter(stack(a.train)[1].tolist())
    assert sorted(counts) == list(range(10))
    assert max(counts.values()) - min(counts.values()) <= 2
    # The held-out split does not depend on `limit`.
    full = build_data(cfg("digits", val_split=0.2), seed=1)
    limited = build_data(cfg("digits", val_split=0.2, limit=100), seed=1)
    assert isinstance(full.val, ImageTensorDataset)
    assert isinstance(limited.val, ImageTensorDataset)
    assert torch.equal(full.val.images, limited.val.images)


def test_digits_augmentation_shifts_but_never_flips() -> None:
    bundle = build_data(cfg("digits", augment=True), seed=0)
    train = bundle.train
    assert isinstance(train, ImageTensorDataset)
    torch.manual_seed(0)
    shifted = 0
    for i in range(40):
        raw = train.images[i : i + 1]
        if torch.equal(raw, raw.flip(3)):
            continue
        candidates = []
        padded = torch.nn.functional.pad(raw, (1, 1, 1, 1))
        for dy in range(3):
            for dx in range(3):
                candidates.append(train.normalise(padded[:, :, dy : dy + 8, dx : dx + 8])[0])
        x = train[i][0]
        assert any(torch.equal(x, c) for c in candidates), "augmented digit is not a 1-pixel shift"
        shifted += not torch.equal(x, candidates[4])
    assert shifted > 10


# ---------------------------------------------------------------- cifar


def _write_pickle(path: Path, obj: dict[str, Any]) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(rng: np.random.Generator, n: int, label_key: str, classes: int) -> dict[str, Any]:
    return {
        "batch_label": "tiny batch",
        label_key: [int(i % classes) for i in range(n)],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_pickle(folder / f"data_batch_{i}", _cifar_batch(rng, 20, "labels", 10))
    _write_pickle(folder / "test_batch", _cifar_batch(rng, 30, "labels", 10))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 20, "num_vis": 3072})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", 200), ("test", 100)):
        batch = _cifar_batch(rng, n, "fine_labels", 100)
        batch["coarse_labels"] = [i % 20 for i in range(n)]
        _write_pickle(folder / split, batch)
    names = [f"class_{i:02d}" for i in range(100)]
    _write_pickle(
        folder / "meta", {"fine_label_names": names, "coarse_label_names": [str(i) for i in range(20)]}
    )
    return tmp_path


def test_cifar10_reads_batches_meta_and_normalises(cifar10_root: Path) -> None:
    bundle = build_data(cfg("cifar10", cifar10_root), seed=0)
    assert (bundle.n_train, len(bundle.val)) == (100, 30)
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.classes[:2] == ["airplane", "automobile"]
    assert bundle.num_classes == 10
    assert bundle.mean == pytest.approx([0.4914, 0.4822, 0.4465])
    # The eval split is test_batch, in order, normalised with the recorded constants.
    with (cifar10_root / "cifar-10-batches-py" / "test_batch").open("rb") as f:
        raw = pickle.load(f)
    expected = torch.from_numpy(raw["data"].reshape(-1, 3, 32, 32)).float() / 255
    x, y = stack(bundle.val)
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x * std + mean, expected, atol=1e-5, rtol=0)
    assert y.tolist() == raw["labels"]
    assert_augments_train_only(bundle)


def test_cifar10_limit_and_no_augment(cifar10_root: Path) -> None:
    bundle = build_data(cfg("cifar10", cifar10_root, limit=30, val_limit=10, augment=False), seed=0)
    assert (bundle.n_train, len(bundle.val)) == (30, 10)
    assert Counter(stack(bundle.train)[1].tolist()) == dict.fromkeys(range(10), 3)
    assert torch.equal(bundle.train[0][0], bundle.train[0][0])


def test_cifar10_accepts_the_batches_folder_itself(cifar10_root: Path) -> None:
    bundle = build_data(cfg("cifar10", cifar10_root / "cifar-10-batches-py"), seed=0)
    assert bundle.n_train == 100


def test_cifar100_uses_fine_labels(cifar100_root: Path) -> None:
    bundle = build_data(cfg("cifar100", cifar100_root), seed=0)
    assert bundle.num_classes == 100
    assert bundle.classes[99] == "class_99"
    assert (bundle.n_train, len(bundle.val)) == (200, 100)
    y = stack(bundle.train)[1]
    assert y.max().item() == 99
    assert bundle.mean == pytest.approx([0.5071, 0.4865, 0.4409])


def test_cifar_missing_folder_says_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*download: true"):
        build_data(cfg("cifar10", tmp_path), seed=0)
    with pytest.raises(DataError, match="cifar-100-python"):
        build_data(cfg("cifar100", tmp_path / "nowhere"), seed=0)
    with pytest.raises(DataError, match="data.root is not set"):
        build_data(cfg("cifar10"), seed=0)


def test_cifar_bad_labels_and_data_name_the_file(cifar10_root: Path) -> None:
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    batch = _cifar_batch(np.random.default_rng(0), 20, "labels", 10)
    batch["labels"][5] = 10
    _write_pickle(path, batch)
    with pytest.raises(DataError, match=r"data_batch_3.*outside 0\.\.9"):
        build_data(cfg("cifar10", cifar10_root), seed=0)
    batch["data"] = batch["data"][:, :100]
    _write_pickle(path, batch)
    with pytest.raises(DataError, match=r"data_batch_3.*\(n, 3072\)"):
        build_data(cfg("cifar10", cifar10_root), seed=0)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        build_data(cfg("cifar10", cifar10_root), seed=0)


def test_cifar_refuses_pickles_that_would_run_code(cifar10_root: Path) -> None:
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": types.SimpleNamespace()}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1.*types\.SimpleNamespace"):
        build_data(cfg("cifar10", cifar10_root), seed=0)


# ---------------------------------------------------------------- imagefolder


def _write_images(
    folder: Path, count: int, seed: int, size: tuple[int, int] = (12, 10), ext: str = "png"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{ext}")


@pytest.fixture
def folder_with_val(tmp_path: Path) -> Path:
    for k, name in enumerate(["cat", "ant", "bee"]):
        _write_images(tmp_path / "train" / name, 8, seed=k, ext="jpg" if k else "png")
        _write_images(tmp_path / "val" / name, 2, seed=10 + k)
    return tmp_path


def test_imagefolder_with_val_folder(folder_with_val: Path) -> None:
    bundle = build_data(cfg("imagefolder", folder_with_val, image_size=8), seed=0)
    assert bundle.classes == ["ant", "bee", "cat"]
    assert (bundle.n_train, len(bundle.val)) == (24, 6)
    assert bundle.input_shape == (3, 8, 8)
    assert bundle.warnings == []
    assert stack(bundle.val)[1].tolist() == [0, 0, 1, 1, 2, 2]
    # Small images: mean/std measured on the training images, so unaugmented train pixels are standardised.
    plain = build_data(cfg("imagefolder", folder_with_val, image_size=8, augment=False), seed=0)
    x = stack(plain.train)[0]
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=0.02, rtol=0)
    assert plain.mean == bundle.mean
    assert_augments_train_only(bundle)


def test_imagefolder_resizes_shorter_side_then_centre_crops(tmp_path: Path) -> None:
    stripes = np.zeros((8, 16, 3), dtype=np.uint8)
    stripes[:, 6:10] = 255  # a white centre quarter: after 8x16 -> 4x8 and a centre crop, columns 1-2 of 4
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.fromarray(stripes).save(tmp_path / name / f"{i}.png")
    bundle = build_data(cfg("imagefolder", tmp_path, image_size=4, augment=False, val_split=0.2), seed=0)
    train = bundle.train
    assert isinstance(train, ImageTensorDataset)
    assert train.images.shape == (8, 3, 4, 4)
    assert (train.images[:, :, :, 1:3] > 200).all()
    assert (train.images[:, :, :, [0, 3]] < 128).all()


def test_imagefolder_flat_layout_holds_out_val_split(tmp_path: Path) -> None:
    for k, name in enumerate(["x", "y"]):
        _write_images(tmp_path / name, 20, seed=k, size=(8, 8))
    bundle = build_data(cfg("imagefolder", tmp_path, image_size=8, val_split=0.25), seed=0)
    assert (bundle.n_train, len(bundle.val)) == (30, 10)
    assert Counter(stack(bundle.val)[1].tolist()) == {0: 5, 1: 5}
    other = build_data(cfg("imagefolder", tmp_path, image_size=8, val_split=0.25), seed=5)
    assert not torch.equal(stack(bundle.val)[0], stack(other.val)[0])


def test_imagefolder_uncached_matches_cached(folder_with_val: Path) -> None:
    cached = build_data(cfg("imagefolder", folder_with_val, image_size=8, cache=True, augment=False), seed=0)
    lazy = build_data(cfg("imagefolder", folder_with_val, image_size=8, cache=False, augment=False), seed=0)
    assert type(lazy.train).__name__ == "ImageFileDataset"
    assert lazy.mean == pytest.approx(cached.mean)
    torch.testing.assert_close(stack(lazy.val)[0], stack(cached.val)[0])
    torch.testing.assert_close(stack(lazy.train)[0], stack(cached.train)[0])
    restored = pickle.loads(pickle.dumps(lazy.val))
    torch.testing.assert_close(stack(restored)[0], stack(lazy.val)[0])


def test_imagefolder_large_images_use_imagenet_stats_and_resized_crop(folder_with_val: Path) -> None:
    bundle = build_data(cfg("imagefolder", folder_with_val, image_size=64, limit=6, val_limit=3), seed=0)
    assert bundle.input_shape == (3, 64, 64)
    assert bundle.mean == [0.485, 0.456, 0.406]
    assert bundle.train[0][0].shape == (3, 64, 64)
    assert_augments_train_only(bundle)


def test_imagefolder_skips_a_few_corrupt_images(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", 60, seed=0, size=(4, 4), ext="jpg")
    _write_images(tmp_path / "b", 60, seed=1, size=(4, 4))
    (tmp_path / "b" / "zz_garbage.jpg").write_bytes(b"this is not a jpeg")
    bundle = build_data(cfg("imagefolder", tmp_path, image_size=4, val_split=0.25), seed=0)
    assert bundle.n_train + len(bundle.val) == 120
    assert len(bundle.warnings) == 1
    assert "skipped 1 unreadable image(s) of 121" in bundle.warnings[0]
    assert "zz_garbage.jpg" in bundle.warnings[0]
    # Truncated files count too; beyond 1 % the folder is rejected.
    good = (tmp_path / "a" / "000.jpg").read_bytes()
    (tmp_path / "a" / "zz_truncated.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"2 of 122 images .* unreadable"):
        build_data(cfg("imagefolder", tmp_path, image_size=4, val_split=0.25), seed=0)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "is not a folder"),
        ("empty", "has no class folders"),
        ("empty_class", "no images in .*: b"),
        ("unknown_val_class", "val has class folders not in .*: zebra"),
        ("no_images", "no images"),
    ],
)
def test_imagefolder_layout_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_class":
        _write_images(root / "a", 3, seed=0, size=(4, 4))
        (root / "b").mkdir()
    if layout == "unknown_val_class":
        _write_images(root / "train" / "a", 3, seed=0, size=(4, 4))
        _write_images(root / "val" / "zebra", 1, seed=0, size=(4, 4))
    if layout == "no_images":
        (root / "a").mkdir()
        (root / "a" / "notes.txt").write_text("no pictures here")
    with pytest.raises(DataError, match=message):
        build_data(cfg("imagefolder", root, image_size=4), seed=0)


# ---------------------------------------------------------------- npz


def _tabular(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 5)) * np.array([1, 10, 0.1, 5, 2]) + np.array([0, 100, -3, 7, 1]) + y[:, None]
    return x, y


def test_npz_holdout_standardises_with_train_stats(tmp_path: Path) -> None:
    x, y = _tabular(np.random.default_rng(0), 60)
    x[:, 4] = 2.5  # a constant feature must not divide by zero
    path = tmp_path / "table.npz"
    np.savez(path, X=x, y=y)
    bundle = build_data(cfg("npz", path, val_split=0.2), seed=0)
    assert bundle.kind == "tabular"
    assert bundle.input_shape == (5,)
    assert (bundle.n_train, len(bundle.val)) == (48, 12)
    assert bundle.num_classes == 3
    assert bundle.classes == ["0", "1", "2"]
    xt, yt = stack(bundle.train)
    assert xt.dtype == torch.float32
    assert yt.dtype == torch.int64
    torch.testing.assert_close(xt.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(xt[:, :4].std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert bundle.std[4] == 1.0
    assert bundle.mean[1] == pytest.approx(100, abs=5)
    # Recorded stats invert the standardisation; no augmentation ever.
    xv = stack(bundle.val)[0]
    restored = xv.double() * torch.tensor(bundle.std) + torch.tensor(bundle.mean)
    assert all(any(np.allclose(r, row, atol=1e-4) for row in x) for r in restored.numpy())
    assert torch.equal(bundle.train[0][0], bundle.train[0][0])


def test_npz_with_test_arrays_and_float_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = _tabular(rng, 30)
    x_test, y_test = _tabular(rng, 9)
    path = tmp_path / "table.npz"
    np.savez(path, X=x.astype(np.float32), y=y.astype(np.float64), X_test=x_test, y_test=y_test)
    bundle = build_data(cfg("npz", path, limit=12), seed=0)
    assert (bundle.n_train, len(bundle.val)) == (12, 9)
    xv, yv = stack(bundle.val)
    assert yv.tolist() == y_test.tolist()
    expected = (x_test - np.array(bundle.mean)) / np.array(bundle.std)
    np.testing.assert_allclose(xv.numpy(), expected, atol=1e-4)


X4 = np.zeros((4, 2))
Y4 = np.arange(4) % 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": X4, "y": Y4}, r"missing \['X'\], unexpected \['x'\]"),
        ({"X": X4}, r"missing \['y'\]"),
        ({"X": X4, "y": np.zeros(5, dtype=int)}, r"'y' must have shape \(4,\)"),
        ({"X": np.zeros(4), "y": Y4}, r"'X' must have shape \(n, d\)"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0, dtype=int)}, r"'X' must have shape \(n, d\) with n, d > 0"),
        ({"X": X4, "y": np.array([0, 1, -1, 0])}, "'y' has negative label -1"),
        ({"X": X4, "y": np.array([0, 1, 0.5, 0])}, "'y' must hold integer class labels"),
        ({"X": np.array([[0, 1], [np.nan, 0], [1, 1], [2, 2]]), "y": Y4}, "'X' contains NaN"),
        ({"X": X4, "y": Y4, "X_test": X4}, "given together"),
        (
            {"X": X4, "y": Y4, "X_test": np.zeros((2, 3)), "y_test": Y4[:2]},
            "'X_test' has 3 features but 'X' has 2",
        ),
        (
            {"X": X4, "y": Y4, "X_test": X4[:2], "y_test": np.array([0, 2])},
            r"'y_test' has label 2 but .* 0\.\.1",
        ),
    ],
)
def test_npz_bad_arrays_name_file_and_array(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        build_data(cfg("npz", path), seed=0)
    assert str(path) in str(info.value)


def test_npz_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build_data(cfg("npz", tmp_path / "absent.npz"), seed=0)
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz file"):
        build_data(cfg("npz", junk), seed=0)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((3, 2)))
    with pytest.raises(DataError, match="not an .npz archive"):
        build_data(cfg("npz", single), seed=0)
    good = tmp_path / "good.npz"
    np.savez(good, X=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="augment is not supported"):
        build_data(cfg("npz", good, augment=True), seed=0)


# ---------------------------------------------------------------- shared behaviour


def test_unknown_dataset_and_bad_val_split(tmp_path: Path) -> None:
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "imagefolder", "npz"}
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        build_data(cfg("mnist"), seed=0)
    path = tmp_path / "tiny.npz"
    np.savez(path, X=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="val_split 0.1 of 3 examples"):
        build_data(cfg("npz", path), seed=0)


def test_pad_crop_is_a_shifted_window_with_flips() -> None:
    torch.manual_seed(0)
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6).repeat(50, 1, 1, 1)
    out = PadCrop(pad=2, flip=True)(images)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = 0
    for i in range(len(images)):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 25 < flips < 75


def test_datasets_pickle_and_load_in_batches(cifar10_root: Path) -> None:
    bundle = build_data(cfg("cifar10", cifar10_root, augment=False), seed=0)
    restored = pickle.loads(pickle.dumps(bundle.train))
    torch.testing.assert_close(stack(restored)[0], stack(bundle.train)[0])
    xb, yb = next(iter(DataLoader(bundle.train, batch_size=32, shuffle=True)))
    assert xb.shape == (32, 3, 32, 32)
    assert yb.shape == (32,)
