"""The chain's evidence that each group matters: running moments of a second-order Taylor estimate of the loss
the training set would gain if the group were removed, from the gradients the sampler already computes.

For a group g with weights w_g and the minibatch gradient ĝ of the mean loss, (w_g . ĝ)^2 estimates
w_g' F w_g / B at a well-trained point (F the Fisher of one example, B the batch size), and zeroing the group
costs about (1/2) w_g' F w_g per example, so e_g = (N B / 2) (w_g . ĝ)^2 estimates the removal's loss increase
summed over the N training examples. The slices are every slice of the coupled group (producer rows, BatchNorm,
each consumer's columns), so a residual-tied group is judged on everything it feeds. Averaged over the steps
between two E-steps (samples of the chain), with the standard error of that mean, it is what the evidence
E-step weighs against a group's cost (docs/algorithm.md#3-the-e-step-spike-and-slab-group-prior).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from compressor.prune import GroupSet


class ChainEvidence:
    """Running mean and standard error of e_g over the steps since the last `reset`."""

    def __init__(self, groups: GroupSet, n_data: int, batch_size: int) -> None:
        self.groups = groups
        self.params = groups.params
        self.scale = 0.5 * n_data * batch_size
        self.reset()

    def reset(self) -> None:
        # kept on the model's device and read back only by `estimate`: observing never waits for the device
        self.total = torch.zeros(len(self.groups), dtype=torch.float64, device=self.groups.device)
        self.total_sq = torch.zeros_like(self.total)
        self.count = 0

    @torch.no_grad()
    def observe(self) -> None:
        """Fold in this step's gradients (call after backward, before the optimizer moves the weights)."""
        products = {p: p.detach() * p.grad for p in self.params if p.grad is not None}
        if not products:
            return
        e = self.groups.slice_sums(products).double().square().mul_(self.scale).to(self.total.device)
        self.total += e
        self.total_sq += e * e
        self.count += 1

    def estimate(self) -> tuple[Tensor, Tensor]:
        """(mean, standard error of the mean) per group, on the CPU; zeros before any observation."""
        n = max(1, self.count)
        mean = self.total.cpu() / n
        var = (self.total_sq.cpu() / n - mean.square()).clamp_min(0.0) * n / max(1, n - 1)
        return mean, (var / n).sqrt()

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.to("cpu", copy=True), "total_sq": self.total_sq.to("cpu", copy=True),
                "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.groups.device
        self.total = state["total"].to(device=device, dtype=torch.float64, copy=True)
        self.total_sq = state["total_sq"].to(device=device, dtype=torch.float64, copy=True)
        self.count = int(state["count"])
