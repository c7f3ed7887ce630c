"""Baseline pruning schemes for `compressor compare`, one file each; importing this package registers them."""

from compressor.methods.baselines import (  # noqa: F401
    depgraph,
    gmp,
    l1_filter,
    magnitude,
    random_groups,
    slimming,
    snip,
)
