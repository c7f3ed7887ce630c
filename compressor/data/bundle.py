"""The one shape every dataset kind hands to the engine, so the trainer never branches on the data source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch.utils.data import Dataset


class DataOptions(Protocol):
    """The `data:` section of a recipe, as far as the loaders read it (the pydantic model satisfies it)."""

    name: str
    root: str | None
    limit: int | None
    val_limit: int | None
    val_split: float
    augment: bool | None
    download: bool
    image_size: int | None
    cache: bool | None


@dataclass
class DataBundle:
    """Train/eval datasets plus what models, export and reports need to know about them.

    Items of `train` and `val` are `(x, y)`: `x` a float32 tensor already normalised with `mean`/`std`
    (images: after scaling pixels to [0, 1]), `y` an int in `[0, num_classes)`.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    mean: list[float]
    std: list[float]
    classes: list[str]
    kind: str
    warnings: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        """N in the SGHMC likelihood scale is the number of training examples actually used."""
        return len(self.train)  # type: ignore[arg-type]
