"""Training methods: the protocol and registry (`base`), the dense SGD baseline, the Bayesian methods and the
pruning baselines. Importing this package registers every built-in method."""

# Registration order is the order methods are listed in (errors, `compressor recipes`, compare's default).
# isort: off
from compressor.methods import sgd, avb, emmcmc  # noqa: F401
from compressor.methods import baselines  # noqa: F401
# isort: on
from compressor.methods.base import (
    KINDS,
    METHODS,
    Kind,
    Method,
    Predict,
    PruneSchedule,
    TrainContext,
    create_method,
    method_class,
    param_groups,
    prune_schedule,
    register_method,
)

__all__ = [
    "KINDS",
    "METHODS",
    "Kind",
    "Method",
    "Predict",
    "PruneSchedule",
    "TrainContext",
    "create_method",
    "method_class",
    "param_groups",
    "prune_schedule",
    "register_method",
]
