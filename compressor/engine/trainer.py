"""The training loop: data -> model -> method -> train/eval, reporting through events only.

`run(recipe, on_event, should_stop)` is the whole engine API. It imports no UI code; sinks (console,
dashboard) receive the events, and the run directory's metrics.jsonl is written here so every caller
gets a complete run directory. Under torchrun every process calls `run`; only rank 0 writes files and
calls `on_event` (see engine/distributed.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from compressor import metrics as M
from compressor.storage.checkpoint import load_checkpoint, save_checkpoint
from compressor.engine.distributed import GlobalBatchSampler, Ranks, process_group
from compressor.events import EpochEnd, Event, Log, RunFinished, RunStarted, StepDone
from compressor.methods.base import Method, TrainContext, create_method
from compressor.storage.rundir import JsonlWriter, create_run_dir, write_json
from compressor.errors import RunDirError, TrainingDiverged
from compressor.recipe import Recipe, resolved_yaml, validate_recipe

OnEvent = Callable[[Event], None]


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RunDirError("train.device=cuda but no CUDA device is available (use --device cpu or auto)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch's data order and augmentation derive from (seed, epoch), so a resumed run replays them."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every global random stream, in types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_rest": [np_state["state"]["pos"], np_state["has_gauss"], np_state["gauss"]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, gauss_value = state["numpy_rest"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": state["numpy_key"].numpy().astype(np.uint32),
                         "pos": pos}, "has_gauss": has_gauss, "gauss": gauss_value})
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class NonFiniteWatch:
    """Was a loss NaN/inf? On CUDA the answer is read one step late, so checking never stalls the queue."""

    def __init__(self, device: torch.device) -> None:
        self.lagged = device.type == "cuda"
        self.flag = torch.zeros((), dtype=torch.bool, pin_memory=self.lagged)
        self.ready = torch.cuda.Event() if self.lagged else None

    def seen(self, loss_sum: Tensor) -> bool:
        bad = ~torch.isfinite(loss_sum)
        if self.ready is None:
            return bool(bad)
        self.ready.synchronize()
        previous = bool(self.flag)
        self.flag.copy_(bad, non_blocking=True)
        self.ready.record()
        return previous


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@dataclass
class Session:
    """Everything built from a recipe before the first step (also used by `compressor eval`)."""

    recipe: Recipe
    device: torch.device
    data: Any
    model: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    example_input: torch.Tensor
    sampler: GlobalBatchSampler


def _worker_context() -> Any:
    """Loader workers start from a fresh process, never forked from one whose other threads (the dashboard)
    may hold locks; forkserver makes that cheap by forking each worker from a server with torch loaded."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "compressor.data"])
    return ctx


def build_session(recipe: Recipe, device: torch.device, ranks: Ranks | None = None) -> Session:
    """Data, model and loaders; with several processes each gets its share of the batches and eval rows."""
    from compressor.data import build_data
    from compressor.models import create_model

    seed_everything(recipe.train.seed)
    data = build_data(recipe.data, seed=recipe.train.seed)
    options = dict(recipe.model.options)
    if recipe.model.hidden is not None:
        options["hidden"] = list(recipe.model.hidden)
    model = create_model(recipe.model.name, num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                         **options).to(device)
    if recipe.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ranks = ranks or Ranks()
    workers = recipe.data.workers
    if workers is None:
        workers = min(8, mp.cpu_count()) if device.type == "cuda" else 0
    pin = recipe.data.pin_memory if recipe.data.pin_memory is not None else device.type == "cuda"
    loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        # Not persistent: fresh workers per epoch draw their seeds from the epoch's RNG, so resume is exact.
        loader_kw.update(persistent_workers=False, multiprocessing_context=_worker_context())
    n_train, batch_size = len(data.train), recipe.train.batch_size
    ranks.check_batch(batch_size, n_train)
    sampler = GlobalBatchSampler(n_train, batch_size, drop_last=n_train > batch_size, rank=ranks.rank,
                                 world=ranks.world)
    train_loader = DataLoader(data.train, batch_sampler=sampler, **loader_kw)
    val = data.val if ranks.world == 1 else Subset(data.val, range(ranks.rank, len(data.val), ranks.world))
    val_loader = DataLoader(val, batch_size=recipe.eval.batch_size, shuffle=False, **loader_kw)
    example = torch.zeros(1, *data.input_shape, device=device)
    return Session(recipe, device, data, model, train_loader, val_loader, example, sampler)


def sparsity_report(model: torch.nn.Module, method: Method, example: torch.Tensor, classifier: str) -> dict[str, Any]:
    """Parameters, MACs of the network with its pruned channels removed, and per-layer kept/total channels."""
    params, nonzero = M.count_params(model)
    if method.groups is not None and method.pruned is not None and bool(method.pruned.any()):
        from compressor.prune.shrink import shrink

        layers = method.groups.layer_table(method.pruned)
        small = shrink(model, method.groups, method.pruned)
        macs = M.count_macs(small, example)
        params_shrunk = sum(p.numel() for p in small.parameters())
    else:
        widths = M.conv_linear_widths(model, skip=classifier)
        layers = [{"layer": k, "kept": v, "total": v} for k, v in widths.items()]
        macs = M.count_macs(model, example)
        params_shrunk = params
    kept = sum(row["kept"] for row in layers)
    total = sum(row["total"] for row in layers)
    return {
        "params": params,
        "params_nonzero": nonzero,
        "params_shrunk": params_shrunk,
        "param_sparsity": 1.0 - nonzero / max(1, params),
        "channel_sparsity": 1.0 - kept / max(1, total),
        "macs": macs,
        "layers": layers,
    }


def checkpoint_bytes_needed(recipe: Recipe, model: nn.Module) -> tuple[int, int]:
    """(bytes, posterior samples): last/previous/best checkpoints plus one being written, each about 3x the
    model state (weights plus up to two optimizer buffers), and one model state per posterior sample."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    samples = getattr(recipe.method, "cycles", 0) * getattr(recipe.method, "samples_per_cycle", 0)
    return 4 * 3 * state + samples * state + (1 << 20), samples


def check_free_space(folder: Path, recipe: Recipe, model: nn.Module) -> None:
    """Refuse before the first step when the run's checkpoints would not fit, not hours later at a save."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    need, samples = checkpoint_bytes_needed(recipe, model)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise RunDirError(f"{folder}: only {free / 2**20:.0f} MiB free, this run needs about {need / 2**20:.0f} "
                          f"MiB (checkpoints and {samples} posterior samples); free some space or use --out "
                          "on another disk")


def new_run_dir(recipe: Recipe, out: Path, model: nn.Module) -> Path:
    check_free_space(out, recipe, model)
    run_dir = create_run_dir(out, recipe.name or "run")
    (run_dir / "recipe.yaml").write_text(resolved_yaml(recipe), encoding="utf-8")
    return run_dir


def load_resume_state(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """last.pt, or previous.pt with a warning when last.pt is missing or corrupt (a crash or a full disk
    mid-save); the bad file is moved aside so the next save cannot rotate it over the good one."""
    folder = run_dir / "checkpoints"
    last, previous = folder / "last.pt", folder / "previous.pt"
    try:
        return load_checkpoint(last), []
    except RunDirError as exc:
        if not previous.is_file():
            raise RunDirError(f"{exc}; there is no previous.pt to fall back on") from None
        try:
            state = load_checkpoint(previous)
        except RunDirError as exc2:
            raise RunDirError(f"{exc}, but {exc2}") from None
        note = f"{exc} — resumed from previous.pt instead (epoch {state['epoch'] + 1}, step {state['step_in_epoch']})"
        if last.exists():
            os.replace(last, folder / "last.corrupt.pt")
            note += "; the bad file is kept as last.corrupt.pt"
        return state, [note]


def run(
    recipe: Recipe | None,
    on_event: OnEvent | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    out_dir: str | Path = "runs",
    device: str | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train one recipe, or resume a run directory (its stored recipe is used); returns the run directory.

    Data and model are built, and the disk checked, before the run directory exists: a bad data file or a
    full disk leaves nothing behind.
    """
    on_event = on_event or (lambda e: None)
    should_stop = should_stop or (lambda: False)
    with process_group() as ranks, ExitStack() as cleanup:
        state: dict[str, Any] | None = None
        notes: list[str] = []
        if resume is not None:
            run_dir = Path(resume)
            state, notes = ranks.on_main(lambda: load_resume_state(run_dir))
            recipe = validate_recipe(state["recipe"], where=str(run_dir / "recipe.yaml"))
        assert recipe is not None, "run() needs a recipe or a run directory to resume"
        dev = ranks.device(resolve_device(device or recipe.train.device))
        s = build_session(recipe, dev, ranks)
        if resume is None:
            run_dir = ranks.on_main(lambda: new_run_dir(recipe, Path(out_dir), s.model))
        else:
            ranks.on_main(lambda: check_free_space(run_dir, recipe, s.model))
        files_dir = run_dir  # where the method may write (posterior samples); a throwaway folder off rank 0
        writer: JsonlWriter | None = None
        if ranks.main:
            writer = JsonlWriter(run_dir / "metrics.jsonl")
            cleanup.callback(writer.close)
        else:
            files_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="compressor-rank-")))

        def emit(event: Event) -> None:
            if writer is not None:
                writer.write(event.to_dict())
                on_event(event)

        notes += getattr(s.data, "warnings", [])
        return _train(recipe, s, run_dir, files_dir, emit, should_stop, state, ranks, notes)


def _train(recipe: Recipe, s: Session, run_dir: Path, files_dir: Path, emit: OnEvent,
           should_stop: Callable[[], bool], state: dict[str, Any] | None, ranks: Ranks, notes: list[str]) -> Path:
    model, cfg, dev = s.model, recipe.train, s.device
    classifier = getattr(model, "classifier_name", "")
    ctx = TrainContext(model=model, n_train=len(s.data.train), steps_per_epoch=len(s.train_loader),
                       epochs=cfg.epochs, device=dev, example_input=s.example_input, classifier_name=classifier,
                       run_dir=files_dir, prune=recipe.prune, seed=cfg.seed)
    method = create_method(recipe.method, ctx)
    amp = cfg.amp and dev.type == "cuda"
    channels_last = cfg.channels_last and dev.type == "cuda"
    macs_dense = M.count_macs(model, s.example_input)
    start_epoch, skip_steps, global_step, train_seconds, images_seen = 0, 0, 0, 0.0, 0
    partial = {"loss": 0.0, "correct": 0.0, "seen": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        start_epoch, skip_steps = state["epoch"], state["step_in_epoch"]
        global_step, train_seconds, images_seen = state["global_step"], state["train_seconds"], state["images_seen"]
        partial = dict(state["partial"])
        if len(state["rng"]) != ranks.world:
            notes.append(f"the checkpoint was written by {len(state['rng'])} process(es), this run has "
                         f"{ranks.world}: same batches, but random augmentation differs from an uninterrupted run")
    forward = ranks.wrap(model)  # DDP averages gradients; `model` stays what methods and checkpoints see
    if cfg.compile:
        forward = torch.compile(forward)
    emit(RunStarted(run_dir=str(run_dir), name=recipe.name or run_dir.name, model=recipe.model.name,
                    dataset=recipe.data.name, method=recipe.method.name, device=str(dev), epochs=cfg.epochs,
                    steps_per_epoch=ctx.steps_per_epoch, n_train=ctx.n_train, n_val=len(s.data.val),
                    params=M.count_params(model)[0], macs_dense=macs_dense, recipe=recipe.to_dict(),
                    start_epoch=start_epoch, resumed=state is not None))
    if ranks.world > 1:
        emit(Log(level="info", message=f"data parallel over {ranks.world} processes, "
                                       f"{cfg.batch_size // ranks.world} examples each per step"))
    for note in notes:
        emit(Log(level="warning", message=note))

    def save(epoch: int, step_in_epoch: int, best: bool = False) -> None:
        rng = ranks.gather(rng_state(dev))
        if not _all_finite(model):  # never replace the last good checkpoint with a diverged one
            raise TrainingDiverged(_diverged_message(recipe, "parameters", f"step {global_step}"))
        if not ranks.main:
            return
        payload = {
            "model": model.state_dict(), "method": method.state_dict(), "recipe": recipe.to_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "train_seconds": train_seconds, "images_seen": images_seen, "partial": dict(partial),
            "rng": rng, "dataset_size": ctx.n_train, "last_bma": last_bma,
            "best_accuracy": best_accuracy, "pruned_spec": method.pruned_spec(),
        }
        save_checkpoint(payload, run_dir / "checkpoints" / "last.pt")
        if best:
            save_checkpoint(payload, run_dir / "checkpoints" / "best.pt", keep_previous=False)

    def predict() -> tuple[torch.Tensor, torch.Tensor]:
        probs, labels = M.predict_probs(model, s.val_loader, dev, amp=amp, channels_last=channels_last)
        n_val = len(s.data.val)
        return ranks.gather_rows(probs, n_val), ranks.gather_rows(labels, n_val)

    last_eval: dict[str, Any] = {}
    last_bma: dict[str, Any] | None = state.get("last_bma") if state else None
    best_accuracy: float = state.get("best_accuracy", -1.0) if state else -1.0
    digests: list[str] = []
    stopped = False
    log_every = cfg.log_every
    watch = NonFiniteWatch(dev)
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch) + ranks.rank)  # per rank: augmentation must differ
        s.sampler.generator.manual_seed(epoch_seed(cfg.seed, epoch))  # shared: the global batches
        if skip_steps == 0:  # resumed mid-epoch: these hooks (the E-step) ran before the checkpoint
            for event in method.on_epoch_start(epoch, global_step):
                emit(event)
        model.train()
        loss_sum = torch.zeros((), device=dev)
        correct_sum = torch.zeros((), device=dev)
        seen = 0
        t_epoch = time.perf_counter()
        t_window, n_window = t_epoch, 0
        for i, (x, y) in enumerate(s.train_loader):
            if i < skip_steps:  # resuming mid-epoch: replay the data order, then restore the RNGs exactly
                if i == skip_steps - 1 and state is not None and ranks.rank < len(state["rng"]):
                    set_rng_state(state["rng"][ranks.rank], dev)
                continue
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            method.before_step(global_step)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x)
                loss = F.cross_entropy(logits, y)
            penalty = method.penalty(model)
            total = loss if penalty is None else loss + penalty
            method.optimizer.zero_grad(set_to_none=True)
            total.backward()
            method.step()
            global_step += 1
            for event in method.after_step(epoch, global_step):
                emit(event)
            loss_sum += loss.detach().float() * y.shape[0]
            correct_sum += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.shape[0]
            n_window += y.shape[0] * ranks.world
            stop, diverged = ranks.any_rank(should_stop(), watch.seen(loss_sum))  # all ranks leave together
            if diverged:
                raise TrainingDiverged(_diverged_message(recipe, "loss", f"epoch {epoch + 1} step {i + 1}"))
            if (i + 1) % log_every == 0:
                now = time.perf_counter()
                emit(StepDone(epoch=epoch, step=i + 1, global_step=global_step,
                              total_steps=ctx.total_steps, loss=float(loss.detach()), accuracy=float(
                                  (logits.detach().argmax(dim=1) == y).float().mean()),
                              lr=method.lr_at(global_step), images_per_second=n_window / max(1e-9, now - t_window)))
                t_window, n_window = now, 0
            if stop:
                stopped = True
                break
        ranks.sync_buffers(model)  # rank 0's BatchNorm statistics for eval and the checkpoint
        loss_total, correct_total, seen_total = ranks.sum(float(loss_sum), float(correct_sum), seen)
        if not math.isfinite(loss_total):  # the last step's loss, which the lagged check has not read yet
            raise TrainingDiverged(_diverged_message(recipe, "loss", f"epoch {epoch + 1} step {i + 1}"))
        epoch_time = time.perf_counter() - t_epoch
        train_seconds += epoch_time
        images_seen += int(seen_total)
        partial = {"loss": partial["loss"] + loss_total, "correct": partial["correct"] + correct_total,
                   "seen": partial["seen"] + int(seen_total)}
        if stopped:
            steps_done = i + 1
            save(epoch, steps_done)
            emit(Log(level="info", message=f"stopped at epoch {epoch + 1} step {steps_done}; checkpoint written"))
            break
        skip_steps, state = 0, None
        probs, labels = predict()
        last_eval = M.classification_metrics(probs, labels, recipe.eval.bins)
        bma, events = method.on_epoch_end(epoch, global_step, lambda evaluated=(probs, labels): evaluated)
        for event in events:
            emit(event)
        if bma is not None:
            last_bma = bma
        if ranks.world > 1:
            digests = ranks.check_identical(model, f"after epoch {epoch + 1}")
        sparsity = sparsity_report(model, method, s.example_input, classifier)
        train_loss = partial["loss"] / max(1, partial["seen"])
        emit(EpochEnd(epoch=epoch + 1, epochs=cfg.epochs, train_loss=train_loss,
                      train_accuracy=partial["correct"] / max(1, partial["seen"]), lr=method.lr_at(global_step),
                      seconds=epoch_time, images_per_second=seen_total / max(1e-9, epoch_time), eval=last_eval,
                      sparsity=sparsity, optimizer=method.diagnostics(), bma=bma))
        partial = {"loss": 0.0, "correct": 0.0, "seen": 0}
        improved = last_eval["accuracy"] > best_accuracy
        best_accuracy = max(best_accuracy, last_eval["accuracy"])
        save(epoch + 1, 0, best=improved)
    if not stopped and not last_eval:  # resumed a run that had already finished its epochs
        last_eval = M.classification_metrics(*predict(), recipe.eval.bins)
    summary = _summary(recipe, model, method, s, last_eval, last_bma, macs_dense, train_seconds, images_seen,
                       classifier, stopped)
    summary["world_size"] = ranks.world
    if digests:
        summary["param_digests"] = digests
    if ranks.main:
        write_json(run_dir / "summary.json", summary)
    emit(RunFinished(run_dir=str(run_dir), summary=summary, stopped_early=stopped))
    return run_dir


def _diverged_message(recipe: Recipe, what: str, where: str) -> str:
    method = recipe.method
    advice = f"lower method.lr (now {method.lr:g})"
    temperature = getattr(method, "temperature", None)
    if temperature is not None:
        advice += f", or method.temperature (now {temperature}) to inject less noise"
    return (f"{what} became NaN/inf by {where}; training stopped and the last good "
            f"checkpoint is kept. To fix it, {advice}")


def _summary(recipe: Recipe, model: torch.nn.Module, method: Method, s: Session, ev: dict, bma: dict | None,
             macs_dense: float, train_seconds: float, images_seen: int, classifier: str,
             stopped: bool) -> dict[str, Any]:
    sparsity = sparsity_report(model, method, s.example_input, classifier)
    summary: dict[str, Any] = {
        "method": recipe.method.name,
        "model": recipe.model.name,
        "dataset": recipe.data.name,
        "epochs": recipe.train.epochs,
        "completed": not stopped,
        "accuracy": ev.get("accuracy"),
        "nll": ev.get("nll"),
        "ece": ev.get("ece"),
        "brier": ev.get("brier"),
        "reliability": ev.get("reliability"),
        "params": sparsity["params"],
        "params_nonzero": sparsity["params_nonzero"],
        "params_shrunk": sparsity["params_shrunk"],
        "macs": sparsity["macs"],
        "macs_dense": macs_dense,
        "param_sparsity": sparsity["param_sparsity"],
        "channel_sparsity": sparsity["channel_sparsity"],
        "layers": sparsity["layers"],
        "train_seconds": train_seconds,
        "train_images_per_second": images_seen / max(1e-9, train_seconds),
        "n_train": len(s.data.train),
        "n_val": len(s.data.val),
        "classes": list(s.data.classes),
        "mean": list(s.data.mean),
        "std": list(s.data.std),
        "input_shape": list(s.data.input_shape),
    }
    if bma is not None:
        summary["bma"] = bma
    summary.update(getattr(method, "summary_extra", dict)())
    return json.loads(json.dumps(summary))
