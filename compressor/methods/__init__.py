"""Built-in training methods; importing this package registers them with the engine."""

from compressor.methods import bayesian, sgd  # noqa: F401
