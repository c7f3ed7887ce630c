"""The recipe's sections other than `method` (each method declares its own section beside its code):
pydantic models with `extra="forbid"`, so a typo is an error at its own key, never a silently ignored setting.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    # Non-finite numbers are never meaningful settings (an inf lr would only surface as NaN mid-run).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        """YAML `yes`/`true` is a bool, which pydantic would quietly take as the number 1; passed on as text
        it fails as a number at its own key."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None:
                kinds = set(get_args(field.annotation)) or {field.annotation}
                if bool not in kinds and kinds & {int, float}:
                    out[name] = str(value).lower()
        return out


class ModelConfig(Section):
    """Architecture; extra builder options (e.g. `hidden` for mlp, `depth`/`widen` for wrn) go in `options`."""

    name: str = Field(description="registered model name, see `compressor recipes --models`")
    hidden: list[Annotated[int, Field(gt=0)]] | None = Field(None, description="mlp hidden sizes")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword options of the builder")

    def builder_options(self) -> dict[str, Any]:
        """The keyword options the model builder takes (`options`, plus `hidden` where set)."""
        options = dict(self.options)
        if self.hidden is not None:
            options["hidden"] = list(self.hidden)
        return options


class DataConfig(Section):
    name: str = Field(description="digits | cifar10 | cifar100 | imagefolder | npz")
    root: str | None = Field(None, description="dataset folder, or the .npz file for npz")
    limit: int | None = Field(None, gt=0, description="use at most this many training examples")
    val_limit: int | None = Field(None, gt=0, description="use at most this many evaluation examples")
    val_split: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction when there is no eval split")
    split_seed: int = Field(0, ge=0, lt=2**63, description="picks the held-out split and the limit subsets; "
                            "train.seed never moves them, so every seed is scored on the same examples")
    augment: bool | None = Field(None, description="None = the dataset's default augmentation")
    download: bool = Field(False, description="cifar: download with torchvision (needs network)")
    image_size: int | None = Field(None, gt=0, description="imagefolder: resize to this size (default: the "
                                   "images' own size, at most 224)")
    cache: bool | None = Field(None, description="imagefolder: decode all images into memory once")
    workers: int | None = Field(None, ge=0, description="DataLoader workers; None = chosen for the device")
    pin_memory: bool | None = Field(None, description="page-locked batches for faster copies; None = on CUDA")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from compressor.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset '{v}' (known: {', '.join(DATASETS)})")
        return v


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    seed: int = Field(0, ge=0, lt=2**63, description="torch seeds are 64-bit")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="bf16 autocast on CUDA")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA")
    compile: bool = Field(False, description="torch.compile the training forward pass (slow first steps)")
    log_every: int = Field(20, gt=0, description="emit a step event every this many steps")


def _epoch_spec(value: float | None) -> float | None:
    """An epoch is a whole number (0-based epoch boundary) or a fraction of the run strictly between 0 and 1."""
    if value is None or isinstance(value, int):
        if value is not None and value < 0:
            raise ValueError("an epoch must be >= 0, or a fraction of the run between 0 and 1")
        return value
    if float(value).is_integer() and value >= 0:
        return int(value)
    if not 0.0 < value < 1.0:
        raise ValueError("an epoch must be a whole number, or a fraction of the run between 0 and 1 (e.g. 0.6)")
    return float(value)


EpochSpec = Annotated[int | float, AfterValidator(_epoch_spec)]


def resolve_epoch(value: float, epochs: int) -> int:
    """A recipe's epoch setting as an epoch boundary of a run of `epochs` epochs (fractions follow the run)."""
    return math.floor(value * epochs + 0.5) if isinstance(value, float) else int(value)


class PruneConfig(Section):
    granularity: Literal["channel", "kernel", "neuron", "feature"] = "channel"
    target: float | None = Field(None, gt=0, lt=1, description="fraction to remove (None: prior decides)")
    target_kind: Literal["macs", "params", "channels"] = "macs"
    start_epoch: EpochSpec | None = Field(None, description="spike ramp start, an epoch or a fraction of the "
                                          "run (default: the method's warm-up)")
    target_epoch: EpochSpec | None = Field(None, description="epoch by which the target is met, an epoch or a "
                                           "fraction of the run (default: 60 % of the run)")
    hard_threshold: float = Field(1e-4, ge=0, description="statistic below which a spiked group is removed")
    round_to: int = Field(8, ge=1, description="kept channels per layer stay multiples of this (or the full "
                          "width): fast conv kernels need multiples of 8; 1 = any width")


class EvalConfig(Section):
    batch_size: int = Field(512, gt=0)
    bins: int = Field(15, ge=2, description="ECE: equal-width top-label confidence bins")
