"""The sampler's temperature setting: a name ("1/N", "1/sqrt(N)") or a positive number, resolved against N."""

from __future__ import annotations

import math

TEMPERATURE_NAMES = ("1/N", "1/sqrt(N)")


def resolve_temperature(spec: float | str, n_data: int) -> float:
    """Turn a recipe's temperature ("1/N", "1/sqrt(N)" or a positive number) into T.

    "1/sqrt(N)" is the scale at which the mean-loss parameterisation samples near the posterior
    (T_eff = 1 still needs tau*C chosen to match, see `AdaptiveSGHMC`); "1/N" is effectively cold.
    """
    if n_data <= 0:
        raise ValueError(f"n_data must be positive, got {n_data}")
    if isinstance(spec, str):
        key = spec.replace(" ", "")
        if key == "1/N":
            return 1.0 / n_data
        if key == "1/sqrt(N)":
            return 1.0 / math.sqrt(n_data)
        raise ValueError(f"unknown temperature {spec!r}; use one of {TEMPERATURE_NAMES} or a positive number")
    if isinstance(spec, bool) or not isinstance(spec, int | float) or not math.isfinite(spec) or spec <= 0:
        raise ValueError(f"temperature must be {TEMPERATURE_NAMES} or a positive number, got {spec!r}")
    return float(spec)
