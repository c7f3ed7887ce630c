"""The training loop: data -> model -> method -> train/eval, reporting through events only.

`run(recipe, on_event, should_stop)` is the whole engine API. It imports no UI code; sinks (console,
dashboard) receive the events, and the run directory's metrics.jsonl is written here so every caller
gets a complete run directory.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from compressor.engine import metrics as M
from compressor.engine.checkpoint import load_checkpoint, save_checkpoint
from compressor.engine.events import EpochEnd, Event, Log, RunFinished, RunStarted, StepDone
from compressor.engine.method import Method, TrainContext, create_method
from compressor.engine.rundir import JsonlWriter, create_run_dir, write_json
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


def build_session(recipe: Recipe, device: torch.device) -> Session:
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
    workers = recipe.data.workers
    if workers is None:
        workers = min(8, torch.multiprocessing.cpu_count()) if device.type == "cuda" else 0
    loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        loader_kw.update(persistent_workers=False, multiprocessing_context="spawn")
    drop_last = len(data.train) > recipe.train.batch_size
    train_loader = DataLoader(data.train, batch_size=recipe.train.batch_size, shuffle=True, drop_last=drop_last,
                              generator=torch.Generator(), **loader_kw)
    val_loader = DataLoader(data.val, batch_size=recipe.eval.batch_size, shuffle=False, **loader_kw)
    example = torch.zeros(1, *data.input_shape, device=device)
    return Session(recipe, device, data, model, train_loader, val_loader, example)


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


def run(
    recipe: Recipe | None,
    on_event: OnEvent | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    out_dir: str | Path = "runs",
    device: str | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train one recipe, or resume a run directory (its stored recipe is used); returns the run directory."""
    on_event = on_event or (lambda e: None)
    should_stop = should_stop or (lambda: False)
    state: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        recipe = validate_recipe(state["recipe"], where=str(run_dir / "recipe.yaml"))
    assert recipe is not None, "run() needs a recipe or a run directory to resume"
    dev = resolve_device(device or recipe.train.device)
    if resume is None:
        run_dir = create_run_dir(Path(out_dir), recipe.name or "run")
        (run_dir / "recipe.yaml").write_text(resolved_yaml(recipe), encoding="utf-8")
    writer = JsonlWriter(run_dir / "metrics.jsonl")

    def emit(event: Event) -> None:
        writer.write(event.to_dict())
        on_event(event)

    try:
        return _train(recipe, dev, run_dir, emit, should_stop, state)
    finally:
        writer.close()


def _train(recipe: Recipe, dev: torch.device, run_dir: Path, emit: OnEvent, should_stop: Callable[[], bool],
           state: dict[str, Any] | None) -> Path:
    s = build_session(recipe, dev)
    model, cfg = s.model, recipe.train
    classifier = getattr(model, "classifier_name", "")
    ctx = TrainContext(model=model, n_train=len(s.data.train), steps_per_epoch=len(s.train_loader),
                       epochs=cfg.epochs, device=dev, example_input=s.example_input, classifier_name=classifier,
                       run_dir=run_dir, prune=recipe.prune, seed=cfg.seed)
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
    emit(RunStarted(run_dir=str(run_dir), name=recipe.name or run_dir.name, model=recipe.model.name,
                    dataset=recipe.data.name, method=recipe.method.name, device=str(dev), epochs=cfg.epochs,
                    steps_per_epoch=ctx.steps_per_epoch, n_train=ctx.n_train, n_val=len(s.data.val),
                    params=M.count_params(model)[0], macs_dense=macs_dense, recipe=recipe.to_dict(),
                    start_epoch=start_epoch, resumed=state is not None))
    for warning in getattr(s.data, "warnings", []):
        emit(Log(level="warning", message=warning))

    def save(epoch: int, step_in_epoch: int, best: bool = False) -> None:
        payload = {
            "model": model.state_dict(), "method": method.state_dict(), "recipe": recipe.to_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "train_seconds": train_seconds, "images_seen": images_seen, "partial": dict(partial),
            "rng_torch": torch.get_rng_state(), "dataset_size": ctx.n_train, "last_bma": last_bma,
            "best_accuracy": best_accuracy, "pruned_spec": method.pruned_spec(),
        }
        save_checkpoint(payload, run_dir / "checkpoints" / "last.pt")
        if best:
            save_checkpoint(payload, run_dir / "checkpoints" / "best.pt", keep_previous=False)

    def predict() -> tuple[torch.Tensor, torch.Tensor]:
        return M.predict_probs(model, s.val_loader, dev, amp=amp, channels_last=channels_last)

    last_eval: dict[str, Any] = {}
    last_bma: dict[str, Any] | None = state.get("last_bma") if state else None
    best_accuracy: float = state.get("best_accuracy", -1.0) if state else -1.0
    stopped = False
    log_every = cfg.log_every
    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch))
        s.train_loader.generator.manual_seed(epoch_seed(cfg.seed, epoch))
        for event in method.on_epoch_start(epoch, global_step):
            emit(event)
        model.train()
        loss_sum = torch.zeros((), device=dev)
        correct_sum = torch.zeros((), device=dev)
        seen = 0
        t_epoch = time.perf_counter()
        t_window, n_window = t_epoch, 0
        for i, (x, y) in enumerate(s.train_loader):
            if i < skip_steps:  # resuming mid-epoch: replay the data order, then restore the RNG exactly
                if i == skip_steps - 1 and state is not None:
                    torch.set_rng_state(state["rng_torch"])
                continue
            x = x.to(dev, non_blocking=True)
            y = y.to(dev, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            method.before_step(global_step)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
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
            n_window += y.shape[0]
            if (i + 1) % log_every == 0 or dev.type == "cpu":
                if not torch.isfinite(loss_sum):
                    raise TrainingDiverged(_diverged_message(recipe, epoch, i))
            if (i + 1) % log_every == 0:
                now = time.perf_counter()
                emit(StepDone(epoch=epoch, step=i + 1, global_step=global_step,
                              total_steps=ctx.total_steps, loss=float(loss.detach()), accuracy=float(
                                  (logits.detach().argmax(dim=1) == y).float().mean()),
                              lr=method.lr_at(global_step), images_per_second=n_window / max(1e-9, now - t_window)))
                t_window, n_window = now, 0
            if should_stop():
                stopped = True
                break
        epoch_time = time.perf_counter() - t_epoch
        train_seconds += epoch_time
        images_seen += seen
        partial = {"loss": partial["loss"] + float(loss_sum), "correct": partial["correct"] + float(correct_sum),
                   "seen": partial["seen"] + seen}
        if stopped:
            steps_done = i + 1
            save(epoch, steps_done)
            emit(Log(level="info", message=f"stopped at epoch {epoch + 1} step {steps_done}; checkpoint written"))
            break
        skip_steps, state = 0, None
        probs, labels = predict()
        last_eval = M.classification_metrics(probs, labels, recipe.eval.bins)
        bma, events = method.on_epoch_end(epoch, global_step, predict)
        for event in events:
            emit(event)
        if bma is not None:
            last_bma = bma
        sparsity = sparsity_report(model, method, s.example_input, classifier)
        train_loss = partial["loss"] / max(1, partial["seen"])
        emit(EpochEnd(epoch=epoch + 1, epochs=cfg.epochs, train_loss=train_loss,
                      train_accuracy=partial["correct"] / max(1, partial["seen"]), lr=method.lr_at(global_step),
                      seconds=epoch_time, images_per_second=seen / max(1e-9, epoch_time), eval=last_eval,
                      sparsity=sparsity, optimizer=method.diagnostics(), bma=bma))
        partial = {"loss": 0.0, "correct": 0.0, "seen": 0}
        improved = last_eval["accuracy"] > best_accuracy
        best_accuracy = max(best_accuracy, last_eval["accuracy"])
        save(epoch + 1, 0, best=improved)
    if not stopped and not last_eval:  # resumed a run that had already finished its epochs
        last_eval = M.classification_metrics(*predict(), recipe.eval.bins)
    summary = _summary(recipe, model, method, s, last_eval, last_bma, macs_dense, train_seconds, images_seen,
                       classifier, stopped)
    write_json(run_dir / "summary.json", summary)
    emit(RunFinished(run_dir=str(run_dir), summary=summary, stopped_early=stopped))
    return run_dir


def _diverged_message(recipe: Recipe, epoch: int, step: int) -> str:
    return (f"loss became NaN/inf at epoch {epoch + 1} step {step + 1}; the last good checkpoint is kept. "
            f"Lower method.lr (now {recipe.method.lr:g})")


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
    summary.update(getattr(method, "summary_extra", lambda: {})())
    return json.loads(json.dumps(summary))
