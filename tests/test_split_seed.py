"""`data.split_seed` picks the held-out split; `train.seed` never moves it, so seeds compare like with like."""

from __future__ import annotations

import torch

from compressor.engine.session import build_session
from compressor.recipe import stored_recipe, validate_recipe


def recipe(**data: object) -> dict:
    return {"model": {"name": "mlp", "hidden": [8]}, "data": {"name": "digits", "limit": 300, **data},
            "method": {"name": "sgd"}, "train": {"epochs": 1, "seed": 0}}


def val_rows(raw: dict) -> torch.Tensor:
    session = build_session(validate_recipe(raw), torch.device("cpu"))
    return torch.stack([session.data.val[i][0] for i in range(len(session.data.val))])


def train_rows(raw: dict) -> torch.Tensor:
    session = build_session(validate_recipe(raw), torch.device("cpu"))
    return torch.stack([session.data.train[i][0] for i in range(len(session.data.train))])


def test_training_seed_leaves_the_split_alone_and_split_seed_moves_it() -> None:
    base = recipe()
    other_seed = {**base, "train": {"epochs": 1, "seed": 7}}
    assert torch.equal(val_rows(base), val_rows(other_seed))
    assert torch.equal(train_rows(base), train_rows(other_seed))  # the `limit` subset too
    assert not torch.equal(val_rows(base), val_rows(recipe(split_seed=3)))


def test_a_recipe_stored_before_split_seed_keeps_the_split_it_was_trained_on() -> None:
    old = recipe()
    old["train"]["seed"] = 5
    upgraded = stored_recipe(old)
    assert upgraded["data"]["split_seed"] == 5 and "split_seed" not in old["data"]
    assert stored_recipe(recipe(split_seed=2))["data"]["split_seed"] == 2
    assert validate_recipe(recipe()).data.split_seed == 0
