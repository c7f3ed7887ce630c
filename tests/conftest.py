"""Shared fixtures: tiny, fast settings so the suite stays within CI's budget on 2 cores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# dense sgd on a little digits data: the engine's own behaviour, without the quickstart's pruning schedule
QUICK = ["train.epochs=1", "data.limit=160", "data.val_limit=100", "train.batch_size=32", "method={name: sgd}",
         "prune={}"]


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For modules of tiny runs (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a shared 2-core
    machine a second intra-op thread spinning costs these nets far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quickstart() -> Path:
    return ROOT / "recipes" / "quickstart.yaml"


def train_quickstart(out: Path, overrides: list[str]) -> Path:
    """`compressor train recipes/quickstart.yaml --set ... --no-tui` through the real CLI; its run directory."""
    from typer.testing import CliRunner

    from compressor.cli import app

    args = [arg for text in overrides for arg in ("--set", text)]
    result = CliRunner().invoke(app, ["train", str(ROOT / "recipes" / "quickstart.yaml"), *args, "--no-tui",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def write_cifar10(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10 in torchvision's on-disk pickle format, with a class-dependent colour so nets can learn it."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, n)
        base = rng.integers(0, 120, (n, 3, 32, 32))
        tint = (labels[:, None] * np.array([25, 11, 3])[None, :]) % 130
        data = np.clip(base + tint[:, :, None, None], 0, 255).astype(np.uint8).reshape(n, -1)
        return {b"data": data, b"labels": labels.tolist()}

    per = -(-n_train // 5)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch(per), fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test), fh)
    with open(folder / "batches.meta", "wb") as fh:
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        pickle.dump({b"label_names": [n.encode() for n in names]}, fh)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"))
