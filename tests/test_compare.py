"""`compressor compare` and the baseline pruning schemes, on ResNet-20 and a few hundred 8x8 digits.

One compare of all ten methods (module fixture) feeds most tests: each method meets its target on the
measured network, keeps the classifier, leaves a model whose masked and shrunk forms agree, and the compare
folder holds the leaderboard, the plots and a verified export per structured method.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from compressor.compare import (
    DEFAULT_METHODS,
    CompareOptions,
    find_run,
    method_recipe,
    method_section,
    pareto_front,
    run_compare,
)
from compressor.engine.session import build_session
from compressor.engine.trainer import run
from compressor.errors import RecipeError
from compressor.methods.baselines.gmp import cubic_sparsity
from compressor.prune import build_groups
from compressor.prune.shrink import shrink
from compressor.recipe import validate_recipe
from compressor.storage.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "quickstart.yaml"
TINY = [
    "data.limit=128",
    "data.val_limit=64",
    "train.epochs=2",
    "train.batch_size=32",
    "prune.start_epoch=0",
    "prune.target_epoch=1",
    "prune.round_to=1",  # any width, so the exact fraction is checkable on this tiny net (x8: test_methods)
]
TARGET = 0.5
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def options(**kw: object) -> CompareOptions:
    base: dict = {
        "recipe": RECIPE,
        "methods": list(DEFAULT_METHODS),
        "target": TARGET,
        "overrides": TINY,
        "method_overrides": ["emmcmc:samples_per_cycle=1"],
        "latency_budget_s": 0.05,
    }
    return CompareOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    result = run_compare(options(), tmp_path_factory.mktemp("cmp"))
    assert not result.stopped and result.errors == {}
    return result.folder, {row["method"]: row for row in result.board["rows"]}


def run_dir(folder: Path, row: dict) -> Path:
    return folder / "runs" / row["runs"][0]


def assert_masked_equals_shrunk(path: Path) -> None:
    """Rebuild the run's model from its checkpoint, remove its pruned groups, and compare outputs."""
    state = load_checkpoint(path / "checkpoints" / "last.pt")
    recipe = validate_recipe(state["recipe"])
    session = build_session(recipe, torch.device("cpu"))
    model = session.model.eval()
    model.load_state_dict(state["model"])
    spec = state["pruned_spec"]
    groups = build_groups(model, session.example_input, spec["granularity"])
    small = shrink(model, groups, groups.select(spec["pruned"])).eval()
    x = next(iter(session.val_loader))[0]
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)
    classifier = small.get_submodule(model.classifier_name)
    assert classifier.out_features == session.data.num_classes == 10
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


STRUCTURED = ("emmcmc", "l1_filter", "slimming", "random", "depgraph")
UNSTRUCTURED = ("magnitude", "gmp", "snip")


@pytest.mark.parametrize("method", STRUCTURED)
def test_structured_methods_meet_the_mac_target_and_shrink(compared: tuple[Path, dict], method: str) -> None:
    folder, rows = compared
    row = rows[method]
    assert row["kind"] == "structured"
    # measured on the shrunk network, just past target: one coupled group of this 8x8 ResNet-20 is up to 2.4 %
    assert TARGET <= row["mac_reduction"] <= TARGET + 0.03
    assert row["macs"] < row["macs_dense"] and row["params"] < rows["sgd"]["params"]
    assert_masked_equals_shrunk(run_dir(folder, row))
    report = json.loads((folder / "exports" / f"{row['runs'][0]}.json").read_text())
    assert report["max_abs_diff"] <= 1e-4 and report["macs"] == row["macs"]
    assert row["latency_ms"] > 0 and row["speedup"] > 0


@pytest.mark.parametrize("method", UNSTRUCTURED)
def test_unstructured_methods_hit_the_exact_weight_sparsity(compared: tuple[Path, dict], method: str) -> None:
    folder, rows = compared
    row = rows[method]
    state = load_checkpoint(run_dir(folder, row) / "checkpoints" / "last.pt")
    weights = {k: v for k, v in state["model"].items() if k.endswith("weight") and v.dim() in (2, 4)}
    classifier = weights.pop("fc.weight")
    assert classifier.shape[0] == 10 and bool((classifier != 0).all())  # the classifier is never masked
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert abs(zeros / total - TARGET) <= 1.0 / total
    assert row["weight_sparsity"] == pytest.approx(zeros / total)
    assert row["kind"] == "unstructured" and row["mac_reduction"] == 0.0 and row["latency_ms"] is None


def test_dense_references_prune_nothing(compared: tuple[Path, dict]) -> None:
    _, rows = compared
    for method in ("sgd", "avb"):
        assert rows[method]["mac_reduction"] == 0.0 and rows[method]["param_sparsity"] == 0.0
    assert rows["avb"]["bma_accuracy"] is not None and rows["sgd"]["bma_accuracy"] is None


def test_gmp_ramps_on_the_cubic_schedule(compared: tuple[Path, dict]) -> None:
    assert [round(cubic_sparsity(t, 0, 4, 0.8), 4) for t in range(6)] == [0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8]
    folder, rows = compared
    logs = [
        json.loads(line) for line in (run_dir(folder, rows["gmp"]) / "metrics.jsonl").read_text().splitlines()
    ]
    masked = [r["message"] for r in logs if r["event"] == "log" and "prunable weights masked" in r["message"]]
    assert len(masked) == 4 and masked[-1].endswith("(50.0%)")  # every step of epoch 1 (4 steps of 32)


def test_compare_writes_leaderboard_and_plots(compared: tuple[Path, dict]) -> None:
    folder, rows = compared
    assert list(rows) == list(DEFAULT_METHODS)
    board = json.loads((folder / "leaderboard.json").read_text())
    assert [r["method"] for r in board["rows"]] == list(DEFAULT_METHODS) and board["target"] == TARGET
    for row in board["rows"]:
        assert {
            "accuracy",
            "nll",
            "ece",
            "brier",
            "params",
            "macs",
            "param_sparsity",
            "channel_sparsity",
            "train_seconds",
            "latency_ms",
        } <= row.keys()
        assert 0.0 <= row["accuracy"] <= 1.0 and row["seeds"] == 1 and len(row["reliability"]) == 15
    table = (folder / "leaderboard.md").read_text().splitlines()
    assert sum(line.startswith(f"| {m} |") for m in DEFAULT_METHODS for line in table) == len(DEFAULT_METHODS)
    for name in ("accuracy_vs_macs.png", "ece_vs_sparsity.png", "reliability.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "compare.json").read_text())["methods"] == list(DEFAULT_METHODS)


def test_reinvoking_skips_finished_and_resumes_unfinished_runs(compared: tuple[Path, dict]) -> None:
    folder, rows = compared
    before = sorted(p.name for p in (folder / "runs").iterdir())
    stamps = {name: os.stat(folder / "runs" / name / "summary.json").st_mtime_ns for name in before}
    (folder / "runs" / rows["l1_filter"]["runs"][0] / "summary.json").unlink()  # as if killed at the end
    args = ["compare", str(RECIPE), "--out", str(folder), "--target", str(TARGET)]
    args += [a for s in TINY for a in ("--set", s)] + ["--method-set", "emmcmc:samples_per_cycle=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip().splitlines()[-1]) == folder
    assert sorted(p.name for p in (folder / "runs").iterdir()) == before  # nothing new trained
    assert "[l1_filter s0] resuming" in result.output and "[sgd s0] training" not in result.output
    for name, stamp in stamps.items():
        changed = os.stat(folder / "runs" / name / "summary.json").st_mtime_ns != stamp
        assert changed == name.startswith("l1_filter")
    board = json.loads((folder / "leaderboard.json").read_text())
    assert {r["method"]: r["accuracy"] for r in board["rows"]} == {m: r["accuracy"] for m, r in rows.items()}


def test_structured_snip_prunes_groups_at_initialisation(tmp_path: Path) -> None:
    opts = options(methods=["snip"], method_overrides=["snip:structured=true"])
    recipe, kind = method_recipe(opts, "snip", 0)
    assert kind == "structured" and recipe.prune.target_kind == "macs"
    path = run(recipe, out_dir=tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    assert TARGET <= 1.0 - summary["macs"] / summary["macs_dense"] <= TARGET + 0.02
    pruned = [
        json.loads(line)
        for line in (path / "metrics.jsonl").read_text().splitlines()
        if '"event": "pruned"' in line
    ]
    assert len(pruned) == 1 and pruned[0]["global_step"] == 0  # before the first update
    assert_masked_equals_shrunk(path)


def test_method_settings_follow_the_recipe_and_method_sets() -> None:
    sgd = {"name": "sgd", "lr": 0.05, "nesterov": False}
    assert method_section("l1_filter", sgd, [])[0] == {"name": "l1_filter", "lr": 0.05, "nesterov": False}
    emmcmc = yaml.safe_load(RECIPE.read_text())["method"]
    avb = method_section("avb", emmcmc, [])[0]
    assert avb["beta1"] == emmcmc["beta1"] and "lambda0" not in avb  # shared optimizer fields only
    assert method_section("depgraph", emmcmc, [])[0] == {"name": "depgraph"}  # nothing shared: defaults
    section, origin = method_section(
        "depgraph", sgd, ["sgd:lr=0.2", "depgraph:reg=0.001", "slimming:sparsity=0"]
    )
    assert section == {"name": "depgraph", "lr": 0.2, "nesterov": False, "reg": 0.001}
    assert origin[("method", "lr")] == "--method-set sgd:lr=0.2"
    with pytest.raises(RecipeError, match="not a setting of method 'sgd'"):
        method_section("l1_filter", sgd, ["sgd:sparsity=1"])
    with pytest.raises(RecipeError, match="NAME:KEY=VALUE"):
        method_section("l1_filter", sgd, ["nosuch:lr=1"])


def test_every_method_shares_the_epoch_split_and_target() -> None:
    opts = options(overrides=["train.epochs=10", "prune.target_epoch=null"])
    recipes = {m: method_recipe(opts, m, 0) for m in DEFAULT_METHODS}
    # one split for all: 60 % of the run unless the recipe says
    assert {r.prune.target_epoch for r, _ in recipes.values()} == {6}
    assert recipes["sgd"][0].prune.target is None and recipes["l1_filter"][0].prune.target == TARGET
    assert (
        recipes["magnitude"][0].prune.target_kind == "params"
        and recipes["depgraph"][0].prune.target_kind == "macs"
    )
    assert (
        method_recipe(opts, "sgd", 2)[0].train.seed == 2 and method_recipe(opts, "sgd", 2)[0].name == "sgd-s2"
    )


def test_bad_methods_fail_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(RECIPE), "--methods", "sgd,nosuch", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown method(s) nosuch" in result.output
    result = runner.invoke(app, ["compare", "--resume", str(tmp_path)])
    assert result.exit_code == 3 and "not a compare folder" in result.output
    assert list(tmp_path.iterdir()) == []


def test_pareto_front() -> None:
    points = [(1.0, 70.0), (0.5, 68.0), (0.5, 60.0), (0.6, 65.0), (0.4, 50.0)]
    assert pareto_front(points) == [(0.4, 50.0), (0.5, 68.0), (1.0, 70.0)]


def test_a_run_from_before_a_new_recipe_key_is_still_reused(tmp_path: Path) -> None:
    """Stored recipes are read through today's schema: a key added since (here `method.fused`, with its
    default) does not make a re-invoked compare retrain the run; a real difference still does."""
    recipe, _ = method_recipe(options(), "avb", 0)
    stored = recipe.to_dict()
    del stored["method"]["fused"]
    run_dir = tmp_path / f"{recipe.name}-20260101-000000"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(stored))
    (run_dir / "summary.json").write_text(json.dumps({"completed": True}))
    assert find_run(tmp_path, recipe) == (run_dir, "done")
    stored["method"]["lr"] = 0.05
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(stored))
    assert find_run(tmp_path, recipe) == (None, "new")
    (run_dir / "recipe.yaml").write_text("method: [not, a, recipe]\n")
    assert find_run(tmp_path, recipe) == (None, "new")
