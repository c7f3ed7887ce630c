"""Bayesian machinery without model knowledge: the adaptive SGHMC optimizer, its temperature, and the
spike-and-slab E-step on group statistics (docs/algorithm.md, sections 1 and 3)."""

from compressor.bayes.sghmc import AdaptiveSGHMC
from compressor.bayes.spike_slab import (
    PiChoice,
    cost_price,
    evidence_slab_probability,
    group_decay,
    hard_slab,
    pi_for_budget,
    ramp,
    slab_probability,
    spike_statistic,
    update_pi,
)
from compressor.bayes.temperature import TEMPERATURE_NAMES, resolve_temperature

__all__ = [
    "TEMPERATURE_NAMES",
    "AdaptiveSGHMC",
    "PiChoice",
    "cost_price",
    "evidence_slab_probability",
    "group_decay",
    "hard_slab",
    "pi_for_budget",
    "ramp",
    "resolve_temperature",
    "slab_probability",
    "spike_statistic",
    "update_pi",
]
