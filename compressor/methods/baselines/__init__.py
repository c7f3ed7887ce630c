"""Baseline pruning schemes for `compressor compare`, one file each; importing this package registers them."""

# Registration order: unstructured first, then structured, the order compare lists them in.
# isort: off
from compressor.methods.baselines import magnitude, gmp, l1_filter, slimming, snip, random_groups  # noqa: F401
from compressor.methods.baselines import depgraph  # noqa: F401
# isort: on
