"""Export: every architecture shrinks and exports to an ONNX graph that onnxruntime runs like PyTorch; the
CLI writes verified files with a report and metadata, exports BMA graphs, and fails cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from compressor import metrics as M
from compressor.cli import app
from compressor.engine.evaluate import evaluate_run
from compressor.engine.session import build_session
from compressor.export import onnx as X
from compressor.export.pipeline import ExportOptions, export_run
from compressor.models import create_model
from compressor.prune import build_groups, channel_widths
from compressor.prune.shrink import pruned_spec, shrink
from compressor.recipe import validate_recipe
from compressor.storage.checkpoint import load_checkpoint, save_checkpoint
from compressor.storage.modelfile import load_model_file

from .conftest import QUICK, ROOT

runner = CliRunner()

# (input shape, options): small inputs keep every architecture's trace and export within a few seconds.
ARCHITECTURES: dict[str, tuple[tuple[int, ...], dict[str, object]]] = {
    "resnet20": ((3, 8, 8), {}),
    "resnet56": ((3, 8, 8), {}),
    "resnet18": ((3, 8, 8), {}),
    "wrn": ((3, 8, 8), {"depth": 10, "widen": 2}),
    "vgg16_bn": ((3, 8, 8), {}),
    "tv_resnet18": ((3, 16, 16), {}),
    "mlp": ((20,), {"hidden": [24, 16], "batchnorm": True}),
}
REPORT_KEYS = {"params_dense", "params", "macs_dense", "macs", "file_bytes_dense", "file_bytes", "max_abs_diff",
               "accuracy", "latency_ms_dense", "latency_ms", "speedup", "mac_reduction"}


def randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Trained-looking BatchNorm statistics, so folding them into the convs is not a no-op."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def batch_is_symbolic(proto: onnx.ModelProto) -> bool:
    (value,) = proto.graph.input
    return value.name == X.INPUT and bool(value.type.tensor_type.shape.dim[0].dim_param)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@torch.no_grad()
def test_shrunk_and_masked_exports_match_pytorch(name: str) -> None:
    shape, options = ARCHITECTURES[name]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape, **options).eval()
    randomise_norms(model, gen)
    x = torch.randn(3, *shape, generator=gen)
    groups = build_groups(model, x[:2])
    pruned = groups.round_kept(torch.rand(len(groups), generator=gen) < 0.4)
    groups.zero_(pruned)  # `model` is now the masked network
    shrunk = shrink(model, groups, pruned).eval()
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in model.parameters())

    exported = {"shrunk": X.to_onnx(shrunk, x[:2], "logits", 17), "masked": X.to_onnx(model, x[:2], "logits", 17)}
    for proto in exported.values():
        X.check(proto)
        assert batch_is_symbolic(proto) and proto.graph.output[0].name == "logits"
        sess = X.session(proto)
        assert X.max_abs_diff(sess, model, [x[:1], x]) <= 1e-4  # batch 1 and batch 3 on one graph
        assert X.run(sess, x).shape == (3, 10)
    assert X.initializer_bytes(exported["shrunk"]) < X.initializer_bytes(exported["masked"])
    if name in ("resnet20", "vgg16_bn", "tv_resnet18"):  # conv -> BN everywhere: all of it folds
        assert "BatchNormalization" not in {n.op_type for n in exported["shrunk"].graph.node}


def test_round_kept_restores_the_strongest_pruned_groups() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, input_shape=(1, 8, 8)).eval()
    groups = build_groups(model, torch.zeros(2, 1, 8, 8))
    pruned = groups.round_kept(torch.rand(len(groups)) < 0.6)
    score = torch.rand(len(groups))
    rounded = groups.round_kept(pruned, score, 8)
    assert not bool((rounded & ~pruned).any())  # only ever restores
    for layer_id, row in enumerate(groups.layer_table(rounded)):
        assert row["kept"] % 8 == 0 or row["kept"] == row["total"]
        members = groups.layer_ids == layer_id
        restored, still = members & pruned & ~rounded, members & rounded
        if restored.any() and still.any():
            assert score[restored].min() >= score[still].max()
    widths = channel_widths(shrink(model, groups, rounded))
    assert all(w % 8 == 0 for layer, w in widths.items() if layer != "fc")


# ------------------------------------------------------------------------------------------ run directories


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) dense run trained through the CLI: the quickstart recipe with plain SGD, because the
    pruning schedule needs more epochs than a test can afford; `pruned_run` prunes it by hand."""
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["train", str(ROOT / "recipes" / "quickstart.yaml"), "--no-tui", "--out", str(out),
                                 "--name", "tiny"] + sets(QUICK + ["method={name: sgd}", "prune={}"]))
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pruned_run(dense_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dense run with random channel groups pruned the way the engine leaves them: exactly zero in the
    checkpoint, the spec in `pruned_spec`, the accuracy of the pruned network in summary.json."""
    run_dir = tmp_path_factory.mktemp("pruned") / "pruned-run"
    shutil.copytree(dense_run, run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    session = build_session(validate_recipe(payload["recipe"]), torch.device("cpu"))
    model = session.model
    model.load_state_dict(payload["model"])
    groups = build_groups(model, session.example_input)
    pruned = groups.round_kept(torch.rand(len(groups), generator=torch.Generator().manual_seed(1)) < 0.5)
    groups.zero_(pruned)
    payload.update(model=model.state_dict(), pruned_spec=pruned_spec(groups, pruned))
    save_checkpoint(payload, run_dir / "checkpoints" / "last.pt", keep_previous=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["accuracy"] = M.classification_metrics(*M.predict_probs(model, session.val_loader, torch.device("cpu")))[
        "accuracy"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output and len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_cli_export_writes_verified_files_with_report_and_metadata(
    pruned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", str(pruned_run), "--onnx"])
    assert result.exit_code == 0, result.output
    path = Path("exports") / "pruned-run.onnx"
    assert result.output.strip().splitlines()[-1] == str(path)
    assert "MACs" in result.output and "latency, batch 64" in result.output
    assert sorted(p.name for p in path.parent.iterdir()) == ["pruned-run.json", "pruned-run.onnx", "pruned-run.pt"]

    report = json.loads(path.with_suffix(".json").read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["params"] < report["params_dense"] and report["macs"] < report["macs_dense"]
    assert report["file_bytes"] == path.stat().st_size < report["file_bytes_dense"]
    assert report["max_abs_diff"] <= 1e-4
    summary = json.loads((pruned_run / "summary.json").read_text())
    assert abs(report["accuracy"] - summary["accuracy"]) <= 1e-3
    assert report["accuracy_reference_source"] == "summary.json"
    for key in ("latency_ms_dense", "latency_ms", "speedup"):
        assert set(report[key]) == {"1", "64"} and all(v > 0 for v in report[key].values())

    first = path.read_bytes()
    proto = onnx.load_from_string(first)
    meta = X.read_metadata(proto)
    assert meta["input_size"] == [1, 8, 8] and meta["classes"] == [str(d) for d in range(10)]
    assert meta["mean"] == pytest.approx(summary["mean"]) and meta["std"] == pytest.approx(summary["std"])
    assert meta["method"] == "sgd" and meta["source_run"] == str(pruned_run.resolve())
    assert 0.3 < meta["sparsity"]["channels"] < 0.7 and meta["sparsity"]["macs"] > 0.3
    assert batch_is_symbolic(proto) and [o.name for o in proto.graph.output] == ["logits"]

    # the PyTorch model beside it loads with weights_only, and `compressor eval` scores it the same
    _, (model,) = load_model_file(path.with_suffix(".pt"))
    assert M.count_params(model)[0] == report["params"]
    assert evaluate_run(path.with_suffix(".pt"), [])["accuracy"] == pytest.approx(report["accuracy"], abs=1e-3)

    again = runner.invoke(app, ["export", str(pruned_run), "--onnx"])
    assert again.exit_code == 4 and "already exists" in one_error_line(again.output)
    assert path.read_bytes() == first  # untouched

    # --force overwrites; --round-to restores pruned channels until every width is a multiple of 4
    forced = runner.invoke(app, ["export", str(pruned_run), "--onnx", "-o", str(path), "--force", "--round-to", "4"])
    assert forced.exit_code == 0, forced.output
    rounded = json.loads(path.with_suffix(".json").read_text())
    assert rounded["round_to"] == 4 and rounded["macs_unrounded"] == pytest.approx(report["macs"])
    assert report["macs"] < rounded["macs"] < rounded["macs_dense"] and "costs" in forced.output
    assert rounded["max_abs_diff"] <= 1e-4 and abs(rounded["accuracy"] - summary["accuracy"]) <= 1e-3
    _, (model,) = load_model_file(path.with_suffix(".pt"))
    assert all(w % 4 == 0 for layer, w in channel_widths(model).items() if layer != "fc")


def test_masked_export_keeps_dense_shapes(pruned_run: Path, tmp_path: Path) -> None:
    report = export_run(ExportOptions(pruned_run, output=tmp_path / "m.onnx", masked=True, latency_budget_s=0.1))
    assert report["params"] == report["params_dense"] and report["max_abs_diff"] <= 1e-4
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert X.read_metadata(proto)["mode"] == "masked"
    dense = create_model("resnet20", num_classes=10, input_shape=(1, 8, 8))
    conv_shapes = {tuple(m.weight.shape) for m in dense.modules() if isinstance(m, nn.Conv2d)}
    assert conv_shapes <= {tuple(t.dims) for t in proto.graph.initializer}  # BN folded, widths unchanged
    zero_filters = sum(int((onnx.numpy_helper.to_array(t).reshape(t.dims[0], -1) == 0).all(axis=1).sum())
                       for t in proto.graph.initializer if len(t.dims) == 4)
    assert zero_filters > 0  # the pruned channels are there, exactly zero


def test_bma_graph_averages_the_samples_softmax(pruned_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "bma-run"
    shutil.copytree(pruned_run, run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    (run_dir / "samples").mkdir()
    gen = torch.Generator().manual_seed(2)
    states = []
    for k in (1, 2):  # weights perturbed everywhere, pruned slices included: the export must zero them again
        state = {key: v + 0.05 * torch.randn(v.shape, generator=gen) if key.endswith(("weight", "bias")) else v
                 for key, v in payload["model"].items()}
        torch.save({"model": state, "epoch": k}, run_dir / "samples" / f"sample-{k:03d}.pt")
        states.append(state)
    report = export_run(ExportOptions(run_dir, output=tmp_path / "bma.onnx", bma=True, latency_budget_s=0.1))
    assert report["samples"] == 2 and report["output"] == "probs"

    session = build_session(validate_recipe(payload["recipe"]), torch.device("cpu"))
    model = session.model.eval()
    groups = build_groups(model, session.example_input)
    mask = groups.select(payload["pruned_spec"]["pruned"])
    x = next(iter(session.val_loader))[0][:5]
    expected = []
    with torch.no_grad():
        for state in states:
            model.load_state_dict(state)
            groups.zero_(mask)
            expected.append(model(x).softmax(dim=1))
    proto = onnx.load(str(tmp_path / "bma.onnx"))
    assert [o.name for o in proto.graph.output] == ["probs"]
    got = X.run(X.session(proto), x)
    assert np.abs(got - torch.stack(expected).mean(0).numpy()).max() <= 1e-4
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert evaluate_run(tmp_path / "bma.pt", [])["accuracy"] == pytest.approx(report["accuracy"], abs=1e-3)


def test_failed_verification_leaves_no_file(pruned_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "wrong-summary"
    shutil.copytree(pruned_run, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["accuracy"] = summary["accuracy"] + 0.05  # what the run claims no longer matches its weights
    (run_dir / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(run_dir), "--onnx", "-o", str(out / "x.onnx")])
    assert result.exit_code == 4 and "differs from the run's" in one_error_line(result.output)
    assert list(out.iterdir()) == []


def test_failure_paths_exit_nonzero_with_one_line(dense_run: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["export", str(tmp_path / "nope"), "--onnx"])
    assert missing.exit_code == 3 and "no such run directory" in one_error_line(missing.output)

    empty = tmp_path / "empty-run"
    shutil.copytree(dense_run, empty)
    shutil.rmtree(empty / "checkpoints")
    result = runner.invoke(app, ["export", str(empty), "--onnx", "-o", str(tmp_path / "e.onnx")])
    assert result.exit_code == 3 and "no checkpoint" in one_error_line(result.output)

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["export", str(dense_run), "--onnx", "-o", str(blocker / "sub" / "x.onnx")])
    assert result.exit_code == 4 and "cannot write" in one_error_line(result.output)

    for args, needle in ((["--masked", "--round-to", "8"], "--round-to"), ([], "--onnx"),
                         (["--checkpoint", "sample-x"], "sample-K"), (["--bma", "--checkpoint", "best"], "--bma")):
        result = runner.invoke(app, ["export", str(dense_run)] + (["--onnx"] if args else []) + args)
        assert result.exit_code == 2 and needle in one_error_line(result.output)
