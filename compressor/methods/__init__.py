"""Built-in training methods; importing this package registers them with the engine."""

from compressor.methods import sgd  # noqa: F401
