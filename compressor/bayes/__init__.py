"""Bayesian training: the adaptive SGHMC optimizer, its schedules, and the spike-and-slab E-step."""

from compressor.bayes.schedule import (
    constant,
    cosine,
    cycle_of,
    cyclical_cosine,
    is_sample_epoch,
    resolve_temperature,
    step_decay,
)
from compressor.bayes.sghmc import AdaptiveSGHMC
from compressor.bayes.spike_slab import (
    PiChoice,
    group_decay,
    hard_slab,
    pi_for_budget,
    ramp,
    slab_probability,
    slab_threshold,
    spike_statistic,
    update_pi,
)

__all__ = [
    "AdaptiveSGHMC",
    "PiChoice",
    "constant",
    "cosine",
    "cycle_of",
    "cyclical_cosine",
    "group_decay",
    "hard_slab",
    "is_sample_epoch",
    "pi_for_budget",
    "ramp",
    "resolve_temperature",
    "slab_probability",
    "slab_threshold",
    "spike_statistic",
    "step_decay",
    "update_pi",
]
