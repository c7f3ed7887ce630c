"""Plain dataclass events: the engine's only way of talking to sinks (jsonl, console, dashboard), and their
record form in metrics.jsonl both ways (`Event.to_dict`, `event_from_record`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    persist: ClassVar[bool] = True  # written to metrics.jsonl (live-only events are not)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_dir: str
    name: str
    model: str
    dataset: str
    method: str
    device: str
    epochs: int
    steps_per_epoch: int
    n_train: int
    n_val: int
    params: int
    macs_dense: float
    recipe: dict[str, Any]
    start_epoch: int = 0
    resumed: bool = False
    input_shape: list[int] | None = None  # one example's shape as the model sees it (C, H, W) or (d,)


@dataclass
class StepDone(Event):
    kind: ClassVar[str] = "step"
    epoch: int
    step: int
    global_step: int
    total_steps: int
    loss: float
    accuracy: float
    lr: float
    images_per_second: float


@dataclass
class LiveStep(Event):
    """Live only (not in metrics.jsonl, so the file never depends on timing): where training is between two
    StepDone events, at most about twice a second, so a dashboard's step counter and ETA keep moving."""

    kind: ClassVar[str] = "live_step"
    persist: ClassVar[bool] = False
    epoch: int
    global_step: int
    total_steps: int


@dataclass
class EpochEnd(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    eval: dict[str, Any]
    sparsity: dict[str, Any]
    optimizer: dict[str, Any] = field(default_factory=dict)
    bma: dict[str, Any] | None = None


@dataclass
class Pruned(Event):
    kind: ClassVar[str] = "pruned"
    epoch: int
    global_step: int
    newly_pruned: int
    pruned_groups: int
    total_groups: int
    channel_sparsity: float
    layers: list[dict[str, Any]]
    reason: str = ""
    accuracy_before: float | None = None  # evaluation accuracy just before and just after a measured removal
    accuracy_after: float | None = None


@dataclass
class EStep(Event):
    kind: ClassVar[str] = "estep"
    epoch: int
    global_step: int
    pi: float
    spiked: int
    total_groups: int
    spike_cost_fraction: float
    rule: str = "paper"
    uncertain: int = 0  # groups with 0.05 < p* < 0.95


@dataclass
class SampleCollected(Event):
    kind: ClassVar[str] = "sample"
    epoch: int
    samples: int
    bma: dict[str, Any]


@dataclass
class Log(Event):
    kind: ClassVar[str] = "log"
    level: str
    message: str


@dataclass
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    run_dir: str
    summary: dict[str, Any]
    stopped_early: bool = False


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (RunStarted, StepDone, EpochEnd, Pruned, EStep, SampleCollected, Log, RunFinished)
}


def event_from_record(record: dict[str, Any]) -> Event | None:
    """Rebuild an event from its metrics.jsonl record; unknown kinds and extra keys are ignored so an older
    dashboard can still read a newer run."""
    cls = EVENT_TYPES.get(str(record.get("event")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in record.items() if k in names})
    except TypeError:  # a required field is missing: a record from an incompatible version
        return None
