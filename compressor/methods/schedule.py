"""Step-size schedules (SGD's lr, the sampler's C2) and cycle bookkeeping for posterior sampling.

All schedules are pure functions of the global step, so a resumed run recomputes the same C2 without
saving scheduler state.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def _check_steps(step: int, total_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")


def cyclical_cosine(step: int, total_steps: int, cycles: int, c2_0: float) -> float:
    """cSGMCMC schedule: C2 restarts at `c2_0` at the start of each of `cycles` equal cycles.

    The cycle length is K = total_steps / cycles in steps (no epoch offset, no fractional batch count),
    so step 0 gets exactly c2_0 and the last step of each cycle gets the smallest value.
    """
    _check_steps(step, total_steps)
    if cycles <= 0:
        raise ValueError(f"cycles must be positive, got {cycles}")
    k = total_steps / cycles
    return 0.5 * c2_0 * (math.cos(math.pi * math.fmod(step, k) / k) + 1.0)


def cosine(step: int, total_steps: int, base: float) -> float:
    """Single cosine decay from `base` to 0 over the run (held at 0 past the end)."""
    _check_steps(step, total_steps)
    return 0.5 * base * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0)


def step_decay(
    step: int, steps_per_epoch: int, milestones: Sequence[int], gamma: float, base: float
) -> float:
    """Multiply `base` by `gamma` at the start of each milestone epoch (like torch's MultiStepLR)."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    epoch = step // steps_per_epoch
    return base * gamma ** bisect.bisect_right(sorted(milestones), epoch)


def constant(step: int, base: float) -> float:
    """Constant C2; the step argument keeps the same call shape as the other schedules."""
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    return base


def cycle_of(step: int, total_steps: int, cycles: int) -> int:
    """Index (0-based) of the cycle that global step `step` belongs to under `cyclical_cosine`."""
    _check_steps(step, total_steps)
    if cycles <= 0:
        raise ValueError(f"cycles must be positive, got {cycles}")
    return min(step * cycles // total_steps, cycles - 1)


def _epoch_cycle(epoch: int, epochs: int, cycles: int) -> int:
    # An epoch belongs to the cycle containing its *end*, where its sample would be taken:
    # cycle = ceil((epoch + 1) * cycles / epochs) - 1, computed in integers.
    return -((-(epoch + 1) * cycles) // epochs) - 1


def is_sample_epoch(epoch: int, epochs: int, cycles: int, samples_per_cycle: int) -> bool:
    """Whether the weights at the end of `epoch` (0-based) are a posterior sample for BMA.

    Samples are the last `samples_per_cycle` epochs of each cycle, where C2 is small. When `epochs` is not
    a multiple of `cycles`, each epoch belongs to the cycle its last step falls in, so cycles differ by at
    most one epoch in length; a cycle shorter than `samples_per_cycle` contributes all of its epochs, and a
    cycle that contains no epoch end (epochs < cycles) contributes none.
    """
    if epochs <= 0 or cycles <= 0 or samples_per_cycle < 0:
        raise ValueError(
            f"need epochs > 0, cycles > 0, samples_per_cycle >= 0; got {epochs}, {cycles}, {samples_per_cycle}"
        )
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
    cycle = _epoch_cycle(epoch, epochs, cycles)
    last_epoch_of_cycle = (cycle + 1) * epochs // cycles - 1
    return last_epoch_of_cycle - epoch < samples_per_cycle


SCHEDULES = ("cyclical", "cosine", "step", "constant")


def step_size(
    schedule: str,
    base: float,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    *,
    cycles: int = 1,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """The named schedule's value at global `step`: SGD's lr or the sampler's C2 (the last cyclical step is
    held past the end, so a finished run's report shows the final value)."""
    if schedule == "cyclical":
        return cyclical_cosine(min(step, total_steps - 1), total_steps, cycles, base)
    if schedule == "cosine":
        return cosine(step, total_steps, base)
    if schedule == "step":
        return step_decay(step, steps_per_epoch, milestones, gamma, base)
    if schedule == "constant":
        return constant(step, base)
    raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
