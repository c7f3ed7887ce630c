"""compressor: Bayesian training (adaptive VB-SGHMC) and one-shot structured pruning (EM-MCMC)."""

__version__ = "0.1.0"
