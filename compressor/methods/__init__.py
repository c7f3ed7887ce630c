"""Built-in training methods; importing this package registers them with the engine."""

from compressor.methods import bayesian, sgd  # noqa: F401
from compressor.prune import baselines  # noqa: F401  (magnitude, gmp, l1_filter, slimming, snip, random, depgraph)
