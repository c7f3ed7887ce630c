"""The training loop: data -> model -> method -> train/eval, reporting through events only.

`run(recipe, on_event, should_stop)` is the whole engine API. It imports no UI code; sinks (console,
dashboard) receive the events, and the run directory's metrics.jsonl is written here so every caller
gets a complete run directory. Under torchrun every process calls `run`; only rank 0 writes files and
calls `on_event` (see engine/distributed.py). What a method does (its optimizer, E-step, pruning, posterior
samples) happens through its hooks (`compressor.methods.Method`); the loop never asks which method it runs.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor import metrics as M
from compressor.engine.distributed import Ranks, process_group
from compressor.engine.guards import NonFiniteWatch, all_finite, check_free_space, diverged_message
from compressor.engine.report import run_summary, sparsity_report
from compressor.engine.session import Session, build_session, resolve_device, seed_everything
from compressor.engine.state import Progress, epoch_seed, load_resume_state, rng_state, set_rng_state
from compressor.errors import TrainingDiverged
from compressor.events import EpochEnd, Event, LiveStep, Log, RunFinished, RunStarted, StepDone
from compressor.methods import Method, TrainContext, create_method
from compressor.recipe import Recipe, resolved_yaml, stored_recipe, validate_recipe
from compressor.storage.checkpoint import save_checkpoint
from compressor.storage.rundir import JsonlWriter, create_run_dir, write_json

OnEvent = Callable[[Event], None]
PROGRESS_SECONDS = 0.5  # between two LiveStep events when StepDone events are further apart


@dataclass
class EpochTotals:
    """One epoch's training numbers, summed over every process."""

    loss: float
    correct: float
    seen: int
    seconds: float
    stopped_at: int | None  # the steps taken when a stop was requested mid-epoch


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
    with process_group() as ranks, ExitStack() as cleanup:
        state: dict[str, Any] | None = None
        notes: list[str] = []
        if resume is not None:
            run_dir = Path(resume)
            state, notes = ranks.on_main(lambda: load_resume_state(run_dir))
            recipe = validate_recipe(stored_recipe(state["recipe"]), where=str(run_dir / "recipe.yaml"))
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
                if event.persist:
                    writer.write(event.to_dict())
                on_event(event)

        notes += getattr(s.data, "warnings", [])
        trainer = Trainer(recipe, s, run_dir, files_dir, emit, should_stop or (lambda: False), ranks)
        return trainer.train(state, notes)


def new_run_dir(recipe: Recipe, out: Path, model: torch.nn.Module) -> Path:
    check_free_space(out, recipe, model)
    run_dir = create_run_dir(out, recipe.name or "run")
    (run_dir / "recipe.yaml").write_text(resolved_yaml(recipe), encoding="utf-8")
    return run_dir


class Trainer:
    """One run's loop over epochs and steps; each concern is a named method the loop calls."""

    def __init__(self, recipe: Recipe, s: Session, run_dir: Path, files_dir: Path, emit: OnEvent,
                 should_stop: Callable[[], bool], ranks: Ranks) -> None:
        self.recipe, self.s, self.run_dir, self.emit, self.should_stop, self.ranks = (
            recipe, s, run_dir, emit, should_stop, ranks)
        cfg, dev, model = recipe.train, s.device, s.model
        self.classifier = getattr(model, "classifier_name", "")
        self.ctx = TrainContext(model=model, n_train=len(s.data.train), steps_per_epoch=len(s.train_loader),
                                epochs=cfg.epochs, device=dev, example_input=s.example_input,
                                classifier_name=self.classifier, run_dir=files_dir, prune=recipe.prune,
                                seed=cfg.seed)
        self.ctx.evaluate = self.accuracy
        self.method: Method = create_method(recipe.method, self.ctx)
        self.amp = cfg.amp and dev.type == "cuda"
        self.channels_last = cfg.channels_last and dev.type == "cuda"
        self.macs_dense = M.count_macs(model, s.example_input)
        self.progress = Progress()
        self.rng_to_restore: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] = {}
        self.digests: list[str] = []
        self.watch = NonFiniteWatch(dev)
        self.progress_at = time.perf_counter()  # when the last StepDone or LiveStep event went out

    # -- the loop ---------------------------------------------------------------------------------------
    def train(self, state: dict[str, Any] | None, notes: list[str]) -> Path:
        if state is not None:
            notes += self.restore(state)
        forward = self.ranks.wrap(self.s.model)  # DDP averages gradients; methods and checkpoints see the model
        if self.recipe.train.compile:
            forward = torch.compile(forward)
        self.announce(resumed=state is not None, notes=notes)
        stopped = False
        for epoch in range(self.progress.epoch, self.recipe.train.epochs):
            self.start_epoch(epoch)
            totals = self.train_epoch(epoch, forward)
            self.progress.add_epoch_totals(totals.loss, totals.correct, totals.seen, totals.seconds)
            if totals.stopped_at is not None:
                stopped = True
                self.progress.step_in_epoch = totals.stopped_at
                self.save()
                self.emit(Log(level="info", message=f"stopped at epoch {epoch + 1} step {totals.stopped_at}; "
                                                    "checkpoint written"))
                break
            improved = self.end_epoch(epoch, totals)
            self.progress.start_next_epoch()
            self.save(best=improved)
        return self.finish(stopped)

    def start_epoch(self, epoch: int) -> None:
        """Seed the epoch's streams (augmentation per rank, global batches shared) and run the method's
        epoch-start hooks, unless resuming mid-epoch: they ran before the checkpoint."""
        seed_everything(epoch_seed(self.recipe.train.seed, epoch) + self.ranks.rank)
        self.s.sampler.generator.manual_seed(epoch_seed(self.recipe.train.seed, epoch))
        if self.progress.step_in_epoch == 0:
            for event in self.method.on_epoch_start(epoch, self.progress.global_step):
                self.emit(event)

    def train_epoch(self, epoch: int, forward: Callable[[Tensor], Tensor]) -> EpochTotals:
        s, method, progress, ranks = self.s, self.method, self.progress, self.ranks
        s.model.train()
        loss_sum = torch.zeros((), device=s.device)
        correct_sum = torch.zeros((), device=s.device)
        seen, skip, stopped_at, i = 0, progress.step_in_epoch, None, -1
        t_epoch = time.perf_counter()
        window = (t_epoch, 0)
        for i, (x, y) in enumerate(s.train_loader):
            if i < skip:  # resuming mid-epoch: replay the data order, then restore the RNGs exactly
                if i == skip - 1 and ranks.rank < len(self.rng_to_restore):
                    set_rng_state(self.rng_to_restore[ranks.rank], s.device)
                continue
            logits, loss, y = self.train_step(forward, x, y)
            for event in method.after_step(epoch, progress.global_step):
                self.emit(event)
            loss_sum += loss.detach().float() * y.shape[0]
            correct_sum += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.shape[0]
            window = (window[0], window[1] + y.shape[0] * ranks.world)
            stop, diverged = ranks.any_rank(self.should_stop(), self.watch.seen(loss_sum))  # all leave together
            if diverged:
                raise TrainingDiverged(diverged_message(self.recipe, "loss", f"epoch {epoch + 1} step {i + 1}"))
            if (i + 1) % self.recipe.train.log_every == 0:
                window = self.report_step(epoch, i + 1, logits, loss, y, window)
            elif time.perf_counter() - self.progress_at > PROGRESS_SECONDS:
                self.progress_at = time.perf_counter()
                self.emit(LiveStep(epoch=epoch, global_step=progress.global_step, total_steps=self.ctx.total_steps))
            if stop:
                stopped_at = i + 1
                break
        ranks.sync_buffers(s.model)  # rank 0's BatchNorm statistics for eval and the checkpoint
        loss_total, correct_total, seen_total = ranks.sum(float(loss_sum), float(correct_sum), seen)
        if not math.isfinite(loss_total):  # the last step's loss, which the lagged check has not read yet
            raise TrainingDiverged(diverged_message(self.recipe, "loss", f"epoch {epoch + 1} step {i + 1}"))
        return EpochTotals(loss_total, correct_total, int(seen_total), time.perf_counter() - t_epoch, stopped_at)

    def train_step(self, forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One optimisation step through the method's hooks; returns (logits, loss, labels on the device)."""
        dev, method = self.s.device, self.method
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        method.before_step(self.progress.global_step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = forward(x)
            loss = F.cross_entropy(logits, y)
        penalty = method.penalty(self.s.model)
        total = loss if penalty is None else loss + penalty
        method.optimizer.zero_grad(set_to_none=True)
        total.backward()
        method.step()
        self.progress.global_step += 1
        return logits, loss, y

    def report_step(self, epoch: int, step: int, logits: Tensor, loss: Tensor, y: Tensor,
                    window: tuple[float, int]) -> tuple[float, int]:
        """A StepDone event with the throughput since the last one; returns the new throughput window."""
        now, global_step = time.perf_counter(), self.progress.global_step
        self.progress_at = now
        self.emit(StepDone(epoch=epoch, step=step, global_step=global_step, total_steps=self.ctx.total_steps,
                           loss=float(loss.detach()),
                           accuracy=float((logits.detach().argmax(dim=1) == y).float().mean()),
                           lr=self.method.lr_at(global_step),
                           images_per_second=window[1] / max(1e-9, now - window[0])))
        return now, 0

    def end_epoch(self, epoch: int, totals: EpochTotals) -> bool:
        """Evaluate, let the method see the evaluation (posterior samples, BMA), check the ranks agree and
        report the epoch; returns whether the evaluation accuracy is the best so far."""
        progress, method = self.progress, self.method
        probs, labels = self.predict()
        self.last_eval = M.classification_metrics(probs, labels, self.recipe.eval.bins)
        bma, events = method.on_epoch_end(epoch, progress.global_step, lambda evaluated=(probs, labels): evaluated)
        for event in events:
            self.emit(event)
        if bma is not None:
            progress.last_bma = bma
        if self.ranks.world > 1:
            self.digests = self.ranks.check_identical(self.s.model, f"after epoch {epoch + 1}")
        partial = progress.partial
        self.emit(EpochEnd(epoch=epoch + 1, epochs=self.recipe.train.epochs,
                           train_loss=partial["loss"] / max(1, partial["seen"]),
                           train_accuracy=partial["correct"] / max(1, partial["seen"]),
                           lr=method.lr_at(progress.global_step), seconds=totals.seconds,
                           images_per_second=totals.seen / max(1e-9, totals.seconds), eval=self.last_eval,
                           sparsity=sparsity_report(self.s.model, method, self.s.example_input, self.classifier),
                           optimizer=method.diagnostics(), bma=bma))
        improved = self.last_eval["accuracy"] > progress.best_accuracy
        progress.best_accuracy = max(progress.best_accuracy, self.last_eval["accuracy"])
        return improved

    def finish(self, stopped: bool) -> Path:
        """summary.json and the RunFinished event (also after a stop, with the last evaluation)."""
        if not stopped and not self.last_eval:  # resumed a run that had already finished its epochs
            self.last_eval = M.classification_metrics(*self.predict(), self.recipe.eval.bins)
        p = self.progress
        summary = run_summary(self.recipe, self.s, self.method, self.last_eval, p.last_bma, self.macs_dense,
                              p.train_seconds, p.images_seen, stopped)
        summary["world_size"] = self.ranks.world
        if self.digests:
            summary["param_digests"] = self.digests
        if self.ranks.main:
            write_json(self.run_dir / "summary.json", summary)
        if summary.get("target_met") is False and not stopped:
            self.emit(Log(level="warning", message=f"pruning target not met: {summary['target_note']}"))
        self.emit(RunFinished(run_dir=str(self.run_dir), summary=summary, stopped_early=stopped))
        return self.run_dir

    # -- named pieces -----------------------------------------------------------------------------------
    def announce(self, resumed: bool, notes: list[str]) -> None:
        recipe, ctx, cfg = self.recipe, self.ctx, self.recipe.train
        self.emit(RunStarted(run_dir=str(self.run_dir), name=recipe.name or self.run_dir.name,
                             model=recipe.model.name, dataset=recipe.data.name, method=recipe.method.name,
                             device=str(self.s.device), epochs=cfg.epochs, steps_per_epoch=ctx.steps_per_epoch,
                             n_train=ctx.n_train, n_val=len(self.s.data.val),
                             params=M.count_params(self.s.model)[0], macs_dense=self.macs_dense,
                             recipe=recipe.to_dict(), start_epoch=self.progress.epoch, resumed=resumed,
                             input_shape=list(self.s.data.input_shape)))
        if self.ranks.world > 1:
            self.emit(Log(level="info", message=f"data parallel over {self.ranks.world} processes, "
                                                f"{cfg.batch_size // self.ranks.world} examples each per step"))
        for note in notes:
            self.emit(Log(level="warning", message=note))

    def predict(self) -> tuple[Tensor, Tensor]:
        """Softmax and labels of the whole evaluation split, gathered from every process."""
        s = self.s
        probs, labels = M.predict_probs(s.model, s.val_loader, s.device, amp=self.amp,
                                        channels_last=self.channels_last)
        n_val = len(s.data.val)
        return self.ranks.gather_rows(probs, n_val), self.ranks.gather_rows(labels, n_val)

    def accuracy(self) -> float:
        """Evaluation accuracy of the model as it is now (methods measure what a removal costs with it)."""
        probs, labels = self.predict()
        return float((probs.argmax(dim=1) == labels).float().mean())

    def save(self, best: bool = False) -> None:
        """last.pt (the one before becomes previous.pt), and best.pt when the evaluation improved; a diverged
        model never replaces the last good checkpoint."""
        rng = self.ranks.gather(rng_state(self.s.device))
        if not all_finite(self.s.model):
            raise TrainingDiverged(diverged_message(self.recipe, "parameters", f"step {self.progress.global_step}"))
        if not self.ranks.main:
            return
        payload = {"model": self.s.model.state_dict(), "method": self.method.state_dict(),
                   "recipe": self.recipe.to_dict(), **self.progress.to_checkpoint(), "rng": rng,
                   "dataset_size": self.ctx.n_train, "pruned_spec": self.method.pruned_spec()}
        save_checkpoint(payload, self.run_dir / "checkpoints" / "last.pt")
        if best:
            save_checkpoint(payload, self.run_dir / "checkpoints" / "best.pt", keep_previous=False)

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Model, method and progress from a checkpoint; the RNGs are restored when the replay reaches the
        checkpoint's step. Returns notes for the log."""
        self.s.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.progress = Progress.from_checkpoint(state)
        self.rng_to_restore = list(state["rng"])
        if len(state["rng"]) != self.ranks.world:
            return [(f"the checkpoint was written by {len(state['rng'])} process(es), this run has "
                     f"{self.ranks.world}: same batches, but random augmentation differs from an uninterrupted run")]
        return []
