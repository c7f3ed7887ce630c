"""Between two StepDone events the engine sends live-only LiveStep events, so a dashboard's step counter moves
every step-ish; metrics.jsonl never holds them (it must not depend on timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.engine import trainer
from compressor.engine.trainer import run
from compressor.events import Event, LiveStep, RunStarted
from compressor.recipe import validate_recipe
from compressor.tui.state import HEADER, RunState


def test_live_steps_reach_the_sinks_but_not_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "PROGRESS_SECONDS", -1.0)  # every step that is not a StepDone
    recipe = validate_recipe({"model": {"name": "mlp", "hidden": [8]}, "data": {"name": "digits", "limit": 200},
                              "method": {"name": "sgd"}, "train": {"epochs": 1, "batch_size": 20, "log_every": 5}})
    seen: list[Event] = []
    run_dir = run(recipe, seen.append, out_dir=tmp_path)
    live = [e.global_step for e in seen if isinstance(e, LiveStep)]
    assert live == [1, 2, 3, 4, 6, 7, 8, 9]  # 9 steps, StepDone at 5
    kinds = {json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert "live_step" not in kinds and "step" in kinds
    state = RunState()
    state.apply(next(e for e in seen if isinstance(e, RunStarted)))
    assert state.apply(LiveStep(epoch=0, global_step=3, total_steps=9), now=1.0) == {HEADER}
    assert state.global_step == 3
