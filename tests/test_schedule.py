"""The prune schedule follows the run length, a target the run cannot reach is refused up front naming the key
to change, and a finished run says whether its target was met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.compare import CompareOptions, method_recipe
from compressor.engine.trainer import run
from compressor.errors import RecipeError
from compressor.methods import method_class
from compressor.recipe import load_recipe, validate_recipe

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def schedule(recipe):  # type: ignore[no-untyped-def]
    return method_class(recipe.method.name).schedule(recipe.method, recipe.prune, recipe.train.epochs)


@pytest.mark.parametrize(("epochs", "start", "target"), [(8, 1, 5), (3, 0, 2), (5, 1, 3), (16, 2, 10)])
def test_quickstart_schedule_follows_train_epochs(epochs: int, start: int, target: int) -> None:
    recipe = load_recipe(QUICKSTART, [f"train.epochs={epochs}"])
    got = schedule(recipe)
    assert (got.start_epoch, got.target_epoch) == (start, target)


def test_compare_with_fewer_epochs_derives_every_recipe() -> None:
    opts = CompareOptions(recipe=QUICKSTART, methods=["emmcmc", "l1_filter"], overrides=["train.epochs=4"])
    for name in opts.methods:
        recipe, _ = method_recipe(opts, name, 0)
        assert recipe.train.epochs == 4 and recipe.prune.target_epoch < 4


def test_absolute_epochs_still_work_and_bad_ones_name_the_key() -> None:
    recipe = load_recipe(QUICKSTART, ["prune.target_epoch=6", "prune.start_epoch=2"])
    assert (schedule(recipe).start_epoch, schedule(recipe).target_epoch) == (2, 6)
    with pytest.raises(RecipeError) as info:
        load_recipe(QUICKSTART, ["prune.target_epoch=12"])
    assert info.value.problems == [("--set prune.target_epoch=12: prune.target_epoch: epoch 12 is past the run's "
                                   "8 epochs (train.epochs); set it to at most 8, or a fraction of the run such "
                                   "as 0.6")]
    with pytest.raises(RecipeError, match="prune.target_epoch: an epoch must be a whole number"):
        load_recipe(QUICKSTART, ["prune.target_epoch=1.5"])


def test_a_removal_at_the_run_end_happens_after_the_last_step(tmp_path: Path) -> None:
    """emmcmc removes at an epoch start; with the target epoch at the run's end no epoch starts there, so it
    removes after the last step instead of skipping the target (and the final evaluation sees the result)."""
    recipe = load_recipe(QUICKSTART, ["train.epochs=2", "data.limit=300", "prune.target_epoch=2"])
    assert schedule(recipe).target_epoch == recipe.train.epochs == 2
    run_dir = run(recipe, out_dir=tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["target_met"] is True and summary["target_achieved"] >= 0.5
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (removal,) = [r for r in records if r["event"] == "pruned" and r["reason"].startswith("target")]
    last_epoch = [r for r in records if r["event"] == "epoch"][-1]
    assert removal["global_step"] == 2 * records[0]["steps_per_epoch"]  # after the last step
    assert last_epoch["sparsity"]["macs"] == summary["macs"] < summary["macs_dense"] / 1.9


def test_a_target_the_network_cannot_reach_is_reported_as_not_met(tmp_path: Path) -> None:
    recipe = validate_recipe({
        "model": {"name": "mlp", "hidden": [16]}, "data": {"name": "digits", "limit": 200},
        "method": {"name": "l1_filter"}, "prune": {"target": 0.95, "granularity": "neuron"},
        "train": {"epochs": 2, "batch_size": 50},
    })
    summary = json.loads((run(recipe, out_dir=tmp_path) / "summary.json").read_text())
    assert summary["target_met"] is False and summary["target"] == 0.95
    assert summary["target_note"].endswith("target 95%: the removal did not reach it")
    records = [json.loads(line) for line in next(tmp_path.iterdir()).joinpath("metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "log" and r["message"].startswith("pruning target not met") for r in records)
