"""What the dashboard knows about a run, folded from engine events; no Textual here, so tests read it directly.

Live training, replay and follow all feed the same `RunState.apply`, which is why the three modes show the
same panels with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compressor.events import (
    EpochEnd,
    EStep,
    Event,
    LiveStep,
    Pruned,
    RunFinished,
    RunStarted,
    SampleCollected,
    StepDone,
)

# Panels an event can change; the app redraws only these (the log pane is written per event instead).
HEADER, CURVES, LAYERS, OPTIMIZER, RELIABILITY = "header", "curves", "layers", "optimizer", "reliability"


@dataclass
class EpochPoint:
    """One x position of the curves."""

    epoch: int
    train_loss: float
    accuracy: float | None
    nll: float | None
    ece: float | None
    bma_accuracy: float | None
    bma_nll: float | None
    bma_ece: float | None
    params_left: float | None
    channels_left: float | None
    macs_left: float | None


def epoch_point(e: EpochEnd, macs_dense: float | None) -> EpochPoint:
    ev, sp, bma = e.eval or {}, e.sparsity or {}, e.bma or {}
    param_sparsity, channel_sparsity = sp.get("param_sparsity"), sp.get("channel_sparsity")
    macs = sp.get("macs")
    return EpochPoint(
        epoch=e.epoch,
        train_loss=e.train_loss,
        accuracy=ev.get("accuracy"),
        nll=ev.get("nll"),
        ece=ev.get("ece"),
        bma_accuracy=bma.get("accuracy"),
        bma_nll=bma.get("nll"),
        bma_ece=bma.get("ece"),
        params_left=None if param_sparsity is None else 1.0 - param_sparsity,
        channels_left=None if channel_sparsity is None else 1.0 - channel_sparsity,
        macs_left=macs / macs_dense if macs is not None and macs_dense else None,
    )


@dataclass
class RunState:
    """The latest of everything, plus one curve point per finished epoch (keyed by epoch, so a resumed run that
    repeats an epoch overwrites it instead of drawing it twice)."""

    started: RunStarted | None = None
    step: StepDone | None = None
    last_epoch: EpochEnd | None = None
    points: dict[int, EpochPoint] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    layers_note: str = ""
    lr: float | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    estep: EStep | None = None
    reliability: list[dict[str, Any]] = field(default_factory=list)
    finished: RunFinished | None = None
    global_step: int = 0
    images_per_second: float | None = None
    # ETA: steps per wall-second measured on this side from live events only (replayed records carry no time).
    rate_anchor: tuple[float, int] | None = None
    steps_per_second: float | None = None
    anchor_at_epoch: bool = False  # the first epoch of a (re)start carries one-off costs: re-anchor after it

    @property
    def total_steps(self) -> int:
        if self.step is not None:
            return self.step.total_steps
        if self.started is not None:
            return self.started.epochs * self.started.steps_per_epoch
        return 0

    @property
    def epoch(self) -> int:
        """1-based epoch in progress (or last finished)."""
        if self.started is None or not self.started.steps_per_epoch:
            return 0
        return min(self.started.epochs, self.global_step // self.started.steps_per_epoch + 1)

    @property
    def eta_seconds(self) -> float | None:
        if not self.steps_per_second or self.finished is not None:
            return None
        return max(0, self.total_steps - self.global_step) / self.steps_per_second

    def curve_points(self) -> list[EpochPoint]:
        return [self.points[k] for k in sorted(self.points)]

    def reset_rate(self) -> None:
        """Forget the throughput window (at a (re)start, and after a pause: paused time is not training). The
        window opens at the next step event, not at the start: building the data and model is not training."""
        self.rate_anchor, self.steps_per_second = None, None

    def _measure(self, now: float | None) -> None:
        if now is None:
            return
        if self.rate_anchor is None:
            self.rate_anchor = (now, self.global_step)
            return
        t0, s0 = self.rate_anchor
        if now - t0 > 0 and self.global_step > s0:
            self.steps_per_second = (self.global_step - s0) / (now - t0)

    def apply(self, event: Event, now: float | None = None) -> set[str]:
        """Fold one event in; `now` is the receive time for live events, None for replayed ones.
        Returns the panels that changed."""
        if isinstance(event, StepDone):
            self.step, self.lr = event, event.lr
            self.global_step, self.images_per_second = event.global_step, event.images_per_second
            self._measure(now)
            return {HEADER}  # the live lr is in the header too: redrawing a grid panel repaints the whole grid
        if isinstance(event, LiveStep):
            self.global_step = max(self.global_step, event.global_step)
            self._measure(now)
            return {HEADER}
        if isinstance(event, RunStarted):
            self.started, self.finished = event, None
            self.global_step = event.start_epoch * event.steps_per_epoch
            self.reset_rate()
            self.anchor_at_epoch = True
            return {HEADER}
        if isinstance(event, EpochEnd):
            return self._apply_epoch(event, now)
        if isinstance(event, Pruned):
            self.layers = list(event.layers)
            self.layers_note = f"since the prune at step {event.global_step}" + (
                f" ({event.reason})" if event.reason else "")
            return {LAYERS}
        if isinstance(event, EStep):
            self.estep = event
            return {OPTIMIZER}
        if isinstance(event, SampleCollected):
            self.samples = event.samples
            return {OPTIMIZER}
        if isinstance(event, RunFinished):
            self.finished = event
            return {HEADER}
        return set()

    def _apply_epoch(self, e: EpochEnd, now: float | None) -> set[str]:
        self.last_epoch, self.lr = e, e.lr
        self.images_per_second = e.images_per_second
        if self.started is not None:
            self.global_step = max(self.global_step, e.epoch * self.started.steps_per_epoch)
        if self.anchor_at_epoch and now is not None:  # keep the rate so far, measure afresh from here
            self.rate_anchor, self.anchor_at_epoch = (now, self.global_step), False
        else:
            self._measure(now)
        macs_dense = self.started.macs_dense if self.started is not None else None
        self.points[e.epoch] = epoch_point(e, macs_dense)
        self.optimizer = dict(e.optimizer or {})
        if e.bma and "samples" in e.bma:
            self.samples = max(self.samples, int(e.bma["samples"]))
        changed = {HEADER, CURVES, OPTIMIZER}
        layers = (e.sparsity or {}).get("layers")
        if layers and layers != self.layers:  # unchanged widths keep their note (e.g. the last prune's)
            self.layers, self.layers_note = list(layers), f"since epoch {e.epoch}"
            changed.add(LAYERS)
        reliability = (e.eval or {}).get("reliability")
        if reliability:
            self.reliability = list(reliability)
            changed.add(RELIABILITY)
        return changed
