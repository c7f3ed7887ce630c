"""Interrupts, exact resume, corrupt checkpoints, divergence and a full disk — as a user meets them.

Signals go to a real `python -m compressor train` subprocess; everything is compared with an uninterrupted
run of the same recipe, bit for bit (CPU, same thread count).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from compressor.engine import guards
from compressor.engine.distributed import state_digest
from compressor.engine.trainer import run
from compressor.recipe import validate_recipe
from compressor.storage.checkpoint import load_checkpoint, save_checkpoint
from compressor.storage.rundir import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
# Posterior samples at both epochs, so a resume must restore the running BMA too.
AVB: dict[str, Any] = {
    "name": "avb-tiny",
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "limit": 192, "val_limit": 64},
    "method": {"name": "avb", "lr": 0.05, "beta1": 0.9, "samples_per_cycle": 2},
    "train": {"epochs": 2, "batch_size": 32, "log_every": 1},
}
# E-steps from epoch 2, the target's channels removed at the start of epoch 3, one sample after that.
EMMCMC: dict[str, Any] = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "limit": 128, "val_limit": 64},
    "method": {"name": "emmcmc", "lr": 0.05, "beta1": 0.9, "samples_per_cycle": 1, "warmup_epochs": 1},
    "prune": {"target": 0.4, "start_epoch": 1, "target_epoch": 2},
    "train": {"epochs": 3, "batch_size": 32, "log_every": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def stop_after(n: int) -> Callable[[], bool]:
    calls = itertools.count(1)
    return lambda: next(calls) == n


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    assert state_digest(weights(a)) == state_digest(weights(b))
    sa, sb = summary(a), summary(b)
    for key in ("accuracy", "nll", "ece", "brier", "channel_sparsity", "bma"):
        assert sa.get(key) == sb.get(key), key
    assert sb["completed"]


def one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def avb_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "avb-tiny.yaml"
    path.write_text(yaml.safe_dump(AVB))
    return path


@pytest.fixture(scope="module")
def avb_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(validate_recipe(AVB), out_dir=tmp_path_factory.mktemp("reference"))


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_a_step_then_resume_is_exact(sig: signal.Signals, avb_recipe: Path, avb_reference: Path,
                                                        tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as the reference
    proc = subprocess.Popen([sys.executable, "-m", "compressor", "train", str(avb_recipe), "--no-tui",
                             "--out", str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any('"event": "step"' in p.read_text() for p in tmp_path.glob("*/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    (run_dir,) = tmp_path.iterdir()
    assert out.strip().splitlines()[-1] == str(run_dir)
    hint = [line for line in err.splitlines() if "resume with" in line]
    assert hint == [f"stopped; resume with: compressor train {avb_recipe} --resume {run_dir}"]
    assert "Traceback" not in err
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 0 < state["global_step"] < 12 and state["step_in_epoch"] > 0
    logs = [r["message"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "log"]
    assert any(m.startswith("stopped at epoch") for m in logs)
    assert summary(run_dir)["completed"] is False

    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert_same_run(avb_reference, run_dir)


# ---------------------------------------------------------------- exact resume of the Bayesian methods


def test_avb_resume_restores_noise_and_posterior_samples(avb_reference: Path, tmp_path: Path) -> None:
    part = run(validate_recipe(AVB), should_stop=stop_after(9), out_dir=tmp_path)  # epoch 2, step 3 of 6
    state = load_checkpoint(part / "checkpoints" / "last.pt")
    assert state["method"]["samples"] == 1 and state["method"]["optimizer"]["sampler"]["xi_states"]
    run(None, resume=part)
    assert_same_run(avb_reference, part)
    assert summary(part)["bma"]["samples"] == 2
    assert sorted(p.name for p in (part / "samples").iterdir()) == ["sample-001.pt", "sample-002.pt"]


def test_emmcmc_resume_mid_epoch_keeps_e_step_and_pruning_state(tmp_path: Path) -> None:
    recipe = validate_recipe(EMMCMC)
    full = run(recipe, out_dir=tmp_path / "full")
    part = run(recipe, should_stop=stop_after(10), out_dir=tmp_path / "part")  # epoch 3, step 2: after removal
    state = load_checkpoint(part / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (2, 2) and bool(state["method"]["pruned"].any())
    run(None, resume=part)
    assert_same_run(full, part)
    assert summary(full)["channel_sparsity"] > 0 and summary(full)["bma"]["samples"] == 1

    def events(run_dir: Path) -> list[tuple]:  # the epoch-start E-step is not run twice by the resume
        return [(r["event"], r.get("epoch")) for r in read_jsonl(run_dir / "metrics.jsonl")
                if r["event"] in ("estep", "pruned", "sample")]

    assert events(full) == events(part)


# ---------------------------------------------------------------- corrupt checkpoints


def test_corrupt_last_checkpoint_falls_back_to_previous(avb_recipe: Path, avb_reference: Path,
                                                         tmp_path: Path) -> None:
    part = run(validate_recipe(AVB), should_stop=stop_after(8), out_dir=tmp_path)  # previous.pt: epoch 1 end
    last = part / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--resume", str(part)])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "[warning]" in line]
    assert len(warning) == 1 and str(last) in warning[0]
    assert "resumed from previous.pt instead (epoch 2, step 0); the bad file is kept as last.corrupt.pt" in warning[0]
    assert (part / "checkpoints" / "last.corrupt.pt").read_bytes() == bytes(data)
    assert_same_run(avb_reference, part)


def test_unusable_checkpoints_are_refused_in_one_line(avb_recipe: Path, avb_reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(avb_reference, run_dir)
    last, previous = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "previous.pt"
    last.write_bytes(last.read_bytes()[:5000])
    previous.unlink()
    line = one_line_error(runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--resume", str(run_dir)],
                                        catch_exceptions=False).output)
    assert str(last) in line and "truncated; there is no previous.pt to fall back on" in line
    previous.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--resume", str(run_dir)])
    assert result.exit_code == 3
    line = one_line_error(result.output)
    assert str(last) in line and str(previous) in line
    assert last.stat().st_size == 5000  # nothing was moved or overwritten


# ---------------------------------------------------------------- divergence


def test_absurd_lr_stops_within_a_step_and_names_the_knobs(avb_recipe: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--out", str(tmp_path),
                                 "--set", "method.lr=1e12"])
    assert result.exit_code == 5, result.output
    progress = ("training ", "resuming ")  # the run's first line goes to stderr too; then only the error
    line = one_line_error("\n".join(s for s in result.stderr.splitlines() if not s.startswith(progress)))
    assert "method.lr (now 1e+12)" in line and "method.temperature (now 1/N)" in line
    (run_dir,) = tmp_path.iterdir()
    steps = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "step"]
    assert f"epoch 1 step {len(steps) + 1};" in line  # the first non-finite step is the last one run
    assert all(r["loss"] == r["loss"] and abs(r["loss"]) != float("inf") for r in steps)
    assert not list((run_dir / "checkpoints").iterdir())  # nothing good to keep, nothing bad written


def test_divergence_after_a_good_checkpoint_keeps_it(avb_recipe: Path, tmp_path: Path) -> None:
    part = run(validate_recipe(AVB), should_stop=stop_after(3), out_dir=tmp_path)
    last = part / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["recipe"]["method"]["lr"] = 1e12  # the same run, continued with an absurd step size
    save_checkpoint(state, last, keep_previous=False)
    good = hashlib.sha256(last.read_bytes()).hexdigest()
    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--resume", str(part)])
    assert result.exit_code == 5 and "became NaN/inf by epoch 1 step" in result.stderr
    assert hashlib.sha256(last.read_bytes()).hexdigest() == good


# ---------------------------------------------------------------- disk


def test_full_disk_is_refused_before_anything_is_written(avb_recipe: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda p: usage._replace(free=8 << 20))
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(avb_recipe), "--no-tui", "--out", str(out)])
    assert result.exit_code == 3
    line = one_line_error(result.output)
    assert f"{out}: only 8 MiB free, this run needs about" in line and "2 posterior samples" in line
    assert not out.exists() or not list(out.iterdir())
    need, samples = guards.checkpoint_bytes_needed(validate_recipe(AVB), torch.nn.Linear(1000, 1000))
    assert samples == 2 and need == 14 * 4 * (1000 * 1000 + 1000) + (1 << 20)
