"""Shared fixtures: tiny, fast settings so the suite stays within CI's budget on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["train.epochs=1", "data.limit=160", "data.val_limit=100", "train.batch_size=32"]


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture
def quickstart() -> Path:
    return ROOT / "recipes" / "quickstart.yaml"
