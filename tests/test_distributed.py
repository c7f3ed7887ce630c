"""Data-parallel training on CPU (gloo, 2 processes): torchrun through the CLI, and stop/resume across ranks.

The Bayesian methods are the hard case: the injected noise, the E-step and the pruning must come out the
same on every rank, and a run split over 2 processes must do what one process does with the same global
batch. The model has no BatchNorm in the comparison with one process (per-rank BatchNorm statistics are
the one intended difference); the stop/resume test uses BatchNorm so the buffers' sync is exercised.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from compressor.engine.distributed import GlobalBatchSampler, Ranks, state_digest
from compressor.engine.trainer import run
from compressor.errors import RecipeError
from compressor.recipe import validate_recipe
from compressor.storage.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RECIPE: dict[str, Any] = {
    "model": {"name": "mlp", "hidden": [32], "options": {"batchnorm": False}},
    "data": {"name": "digits", "limit": 128, "val_limit": 64},
    "method": {"name": "emmcmc", "lr": 0.05, "beta1": 0.9, "samples_per_cycle": 1, "warmup_epochs": 1},
    "prune": {"granularity": "neuron", "target": 0.3, "start_epoch": 1, "target_epoch": 2},
    "train": {"epochs": 3, "batch_size": 32, "log_every": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def with_batchnorm() -> dict[str, Any]:
    recipe = json.loads(json.dumps(RECIPE))
    recipe["model"]["options"]["batchnorm"] = True
    recipe["method"] = {"name": "avb", "lr": 0.05, "beta1": 0.9, "samples_per_cycle": 1}
    del recipe["prune"]
    recipe["train"]["epochs"] = 2
    return recipe


def only_run_dir(out: Path) -> Path:
    (run_dir,) = out.iterdir()
    return run_dir


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "compressor", "train", str(recipe), "--no-tui", "--device", "cpu", "--out", str(tmp / "runs")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return only_run_dir(tmp / "runs"), proc


def test_two_ranks_match_one_process_with_the_same_global_batch(torchrun_run: tuple, tmp_path: Path) -> None:
    ddp_dir, _ = torchrun_run
    single_dir = run(validate_recipe(RECIPE), out_dir=tmp_path, device="cpu")
    ddp, single = (json.loads((d / "summary.json").read_text()) for d in (ddp_dir, single_dir))
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    # Both ranks ended bit-identical, and the checkpoint (rank 0's) is that state.
    assert ddp["param_digests"][0] == ddp["param_digests"][1] == state_digest(final_state(ddp_dir))
    # Same E-step decisions and pruning as one process; the weights differ only by float summation order.
    assert ddp["pruned_groups"] == single["pruned_groups"] > 0
    assert ddp["layers"] == single["layers"] and ddp["bma"]["samples"] == single["bma"]["samples"] == 1
    a, b = final_state(ddp_dir), final_state(single_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert ddp["accuracy"] == pytest.approx(single["accuracy"], abs=1 / 64)
    assert ddp["nll"] == pytest.approx(single["nll"], abs=1e-4)


def test_only_rank_zero_writes_and_prints(torchrun_run: tuple) -> None:
    ddp_dir, proc = torchrun_run
    assert proc.stdout.strip() == str(ddp_dir)  # the run directory, reached by broadcast, printed once
    lines = proc.stderr.strip().splitlines()  # progress goes to stderr, rank 0's only
    assert sum(line.startswith("finished:") for line in lines) == 1
    assert sum(line.startswith("epoch ") for line in lines) == 3
    assert "data parallel over 2 processes, 16 examples each per step" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["checkpoints", "metrics.jsonl", "recipe.yaml",
                                                         "samples", "summary.json"]
    assert [p.name for p in (ddp_dir / "samples").iterdir()] == ["sample-001.pt"]
    records = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "run_started" for r in records) == 1  # one writer, not one per rank


def _rank_main(rank: int, world: int, port: int, recipe: dict, out: str, resume: str | None, stop_rank: int,
               stop_after: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    calls = itertools.count(1)

    def should_stop() -> bool:  # only one rank asks: the other must still stop at the same step
        return rank == stop_rank and next(calls) == stop_after

    run(None if resume else validate_recipe(recipe), should_stop=should_stop, out_dir=out, device="cpu",
        resume=resume)


def launch(recipe: dict, out: Path, resume: Path | None = None, stop_rank: int = -1, stop_after: int = 0) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ranks fork from a server that has imported torch and this module once, instead of importing per rank.
    preload = ["compressor.engine.trainer", "compressor.methods", "compressor.data", __name__]
    mp.get_context("forkserver").set_forkserver_preload(preload)
    mp.start_processes(_rank_main, args=(2, port, recipe, str(out), str(resume) if resume else None, stop_rank,
                                         stop_after), nprocs=2, start_method="forkserver")


def test_stop_on_one_rank_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    recipe = with_batchnorm()
    launch(recipe, tmp_path / "full")
    launch(recipe, tmp_path / "part", stop_rank=1, stop_after=6)  # epoch 2, step 2 of 4
    part = only_run_dir(tmp_path / "part")
    state = load_checkpoint(part / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2) and len(state["rng"]) == 2
    launch(recipe, tmp_path / "unused", resume=part)
    full = only_run_dir(tmp_path / "full")
    a, b = final_state(full), final_state(part)
    assert state_digest(a) == state_digest(b)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    assert sa["param_digests"][0] == sa["param_digests"][1]  # BatchNorm buffers included
    assert sa["accuracy"] == sb["accuracy"] and sa["nll"] == sb["nll"] and sb["completed"]
    assert not (tmp_path / "unused").exists()


def test_global_batches_do_not_depend_on_the_number_of_processes() -> None:
    def batches(rank: int, world: int) -> list[list[int]]:
        sampler = GlobalBatchSampler(100, 20, drop_last=True, rank=rank, world=world)
        sampler.generator.manual_seed(7)
        return list(sampler)

    one = batches(0, 1)
    for world in (2, 4):
        shares = [batches(rank, world) for rank in range(world)]
        assert [list(itertools.chain(*(s[b] for s in shares))) for b in range(len(one))] == one
    assert len(one) == 5 and sorted(itertools.chain(*one)) == list(range(100))


def test_global_batch_must_split_evenly() -> None:
    with pytest.raises(RecipeError, match="train.batch_size: 30 does not split evenly over 4"):
        Ranks(rank=0, world=4).check_batch(30, 1000)
    with pytest.raises(RecipeError, match="more than the 50 training examples"):
        Ranks(rank=0, world=2).check_batch(64, 50)
    Ranks().check_batch(30, 10)
