"""Data-parallel training over processes started by `torchrun`: ranks, the global batch, and agreement.

`torchrun --nproc_per_node N -m compressor train RECIPE --no-tui` starts N copies of the CLI; each reads
RANK / WORLD_SIZE / LOCAL_RANK from its environment and `process_group()` joins them. Every rank builds
the same data and model and takes batch_size/N examples of each *global* batch (the batches a single
process would draw), and DistributedDataParallel averages the gradients, so each step sees the gradient
of the mean loss over the global batch and N in the likelihood stays the global dataset size.

The Bayesian optimizer needs no extra communication: its noise generators are seeded from (seed, param
group) on every rank, the E-step reads only parameters, and the parameters start equal, so they stay
bit-identical (checked at every epoch end by `check_identical`). Decisions taken outside the tensors —
stop on a signal, stop on NaN — go through `any_rank` so every rank leaves the loop at the same step.
Only rank 0 writes the run directory; `on_main` runs such work there and hands the result to the others.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from compressor.errors import CompressorError, RecipeError

T = TypeVar("T")


def process_rank() -> int:
    """This process's rank under torchrun (0 when run alone); readable before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def launcher() -> str:
    """The command prefix that starts this run again, for resume hints."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return "compressor"
    per_node = os.environ.get("LOCAL_WORLD_SIZE", str(world))
    return f"torchrun --nproc_per_node {per_node} -m compressor"


@dataclass
class Ranks:
    """Where this process sits among the training processes; world == 1 makes every method a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    control: Any = None  # a gloo group: CPU-side agreement never waits on (or needs) an accelerator

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, dev: torch.device) -> torch.device:
        """Each rank drives its own accelerator: cuda becomes cuda:LOCAL_RANK."""
        if self.world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
        return dev

    def check_batch(self, batch_size: int, n_train: int) -> None:
        """The global batch must split evenly, or ranks would weigh their gradients unequally."""
        if self.world == 1:
            return
        if batch_size % self.world:
            raise RecipeError(f"train.batch_size: {batch_size} does not split evenly over {self.world} "
                              f"processes (use a multiple of {self.world})")
        if n_train < batch_size:
            raise RecipeError(f"train.batch_size: {batch_size} is more than the {n_train} training examples; "
                              f"data-parallel training needs at least one full global batch")

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and give its result to every rank; its CompressorError is raised on all."""
        if self.world == 1:
            return fn()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.main:
            try:
                box[0] = ("ok", fn())
            except CompressorError as exc:
                failure, box[0] = exc, ("error", exc)
            except Exception as exc:  # noqa: BLE001  (re-raised below; the others must not wait forever)
                failure, box[0] = exc, ("error", CompressorError(f"rank 0 failed: {exc.__class__.__name__}"))
        dist.broadcast_object_list(box, src=0, group=self.control)
        if failure is not None:
            raise failure
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def any_rank(self, *flags: bool) -> list[bool]:
        """For each flag: is it set on any rank? One small CPU collective for all of them."""
        if self.world == 1:
            return list(flags)
        t = torch.tensor(flags, dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(v) for v in t.tolist()]

    def sum(self, *values: float) -> list[float]:
        """Sums over ranks (epoch loss and accuracy tallies), in float64."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.control)
        return t.tolist()

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank (per-rank RNG states for the checkpoint)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def gather_rows(self, t: Tensor, n: int) -> Tensor:
        """Rows r, r + world, ... of an n-row result were computed on rank r: reassemble all n on every rank."""
        if self.world == 1:
            return t
        per = -(-n // self.world)
        padded = t.new_zeros((per, *t.shape[1:]))
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.control)
        out = t.new_empty((n, *t.shape[1:]))
        for r, part in enumerate(parts):
            out[r :: self.world] = part[: len(range(r, n, self.world))]
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP for the training forward pass; the bare model stays what methods, eval and checkpoints see."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    @torch.no_grad()
    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere: DDP syncs them before each forward, not after the last."""
        if self.world == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def check_identical(self, model: nn.Module, when: str) -> list[str]:
        """Every rank's parameter digest; a mismatch is a bug (ranks would silently train different nets)."""
        digests = self.gather(state_digest(model.state_dict()))
        if len(set(digests)) > 1:
            raise RuntimeError(f"parameters differ between processes {when} (digests {digests}); please report this")
        return digests


def state_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 over the names and bytes of a state_dict: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def process_group() -> Iterator[Ranks]:
    """Join the torchrun process group for the duration of a run (a single process gets `Ranks()`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Ranks()
        return
    owner = not dist.is_initialized()
    if owner:
        # CPU collectives always go through gloo; tensors on a GPU through NCCL.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    control = dist.new_group(backend="gloo") if torch.cuda.is_available() else None
    try:
        yield Ranks(rank=dist.get_rank(), world=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")), control=control)
    finally:
        if owner:
            dist.destroy_process_group()


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's slice of each global batch, so the batches are the same for any number of processes.

    The epoch's order is `torch.randperm(n)` from `generator` (the trainer seeds it per epoch, which is
    also what a shuffled single-process DataLoader draws); global batch b is order[b*B:(b+1)*B] and rank r
    takes its r-th contiguous share of B / world.
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.rank, self.world = rank, world
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        share = self.batch_size // self.world
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch if self.world == 1 else batch[self.rank * share : (self.rank + 1) * share]
