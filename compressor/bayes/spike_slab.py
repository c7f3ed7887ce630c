"""E-step of the spike-and-slab group prior on group statistics (docs/algorithm.md#3-the-e-step-spike-and-slab-group-prior);
no model knowledge here.

A group g of m_g weights with mean square s_g = mean(w_g^2) has slab prior N(0, v1 I) with probability pi
and spike prior N(0, v0 I) otherwise, v1 = 1/(N lambda1), v0 = 1/(N lambda0), lambda0 > lambda1. The
log-odds of the slab,

    L_g = logit(pi) + q_g,   q_g = (m_g / 2) * (N (lambda0 - lambda1) s_g - ln(lambda0 / lambda1)),

are computed directly (float64): the densities themselves under/overflow for large groups. q_g orders the
groups from most spike-like to most slab-like, and the budget helper thresholds it. Every function takes
`pi` or, when pi is too close to 0 or 1 for a float (large groups under a sparsity budget), `logit_pi`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def _check_lambdas(n_data: int, lambda1: float, lambda0: float) -> None:
    if n_data <= 0:
        raise ValueError(f"n_data must be positive, got {n_data}")
    if not 0 < lambda1 < lambda0:
        raise ValueError(f"need 0 < lambda1 < lambda0, got lambda1={lambda1}, lambda0={lambda0}")


def _logit(pi: float, logit_pi: float | None) -> float:
    if logit_pi is not None:
        return float(logit_pi)
    if not 0.0 < pi < 1.0:
        raise ValueError(f"pi must be in (0, 1), got {pi}; pass logit_pi for extreme values")
    return math.log(pi) - math.log1p(-pi)


def spike_statistic(s: Tensor, m: Tensor | int, *, n_data: int, lambda1: float, lambda0: float) -> Tensor:
    """q_g (float64): the slab log-odds at pi = 1/2. Groups with the smallest q_g go to the spike first."""
    _check_lambdas(n_data, lambda1, lambda0)
    s64 = s.detach().double()
    m64 = torch.as_tensor(m, dtype=torch.float64, device=s64.device)
    return 0.5 * m64 * (n_data * (lambda0 - lambda1) * s64 - math.log(lambda0 / lambda1))


def _slab_log_odds(
    s: Tensor, m: Tensor | int, n_data: int, lambda1: float, lambda0: float, pi: float, logit_pi: float | None
) -> Tensor:
    """L_g = logit(pi) + q_g (float64), the common part of the soft and the hard E-step."""
    return spike_statistic(s, m, n_data=n_data, lambda1=lambda1, lambda0=lambda0) + _logit(pi, logit_pi)


def _result_dtype(s: Tensor) -> torch.dtype:
    """The E-step's results come back in the dtype of the statistics, float32 for integer ones."""
    return s.dtype if s.is_floating_point() else torch.float32


def slab_probability(
    s: Tensor,
    m: Tensor | int,
    *,
    n_data: int,
    lambda1: float,
    lambda0: float,
    pi: float = 0.5,
    logit_pi: float | None = None,
) -> Tensor:
    """Posterior slab probability p*_g of each group, in the dtype of `s`."""
    log_odds = _slab_log_odds(s, m, n_data, lambda1, lambda0, pi, logit_pi)
    return torch.sigmoid(log_odds).to(_result_dtype(s))


def hard_slab(
    s: Tensor,
    m: Tensor | int,
    *,
    n_data: int,
    lambda1: float,
    lambda0: float,
    pi: float = 0.5,
    logit_pi: float | None = None,
) -> Tensor:
    """Hard E-step: 1 where p* > 1/2 (slab), else 0, in the dtype of `s`."""
    log_odds = _slab_log_odds(s, m, n_data, lambda1, lambda0, pi, logit_pi)
    return (log_odds > 0).to(_result_dtype(s))


def group_decay(p: Tensor, lambda1: float, lambda0: float) -> Tensor:
    """M-step prior precision per group: the slab/spike decays mixed by the slab probability."""
    return p * lambda1 + (1.0 - p) * lambda0


def update_pi(p: Tensor) -> float:
    """pi <- mean slab probability. pi = 0 or 1 is absorbing; budget-controlled runs set logit_pi instead."""
    return float(p.double().mean())


class PiChoice(NamedTuple):
    """Result of `pi_for_budget`: use `logit_pi` (pi itself may round to 0 or 1 for large groups)."""

    logit_pi: float
    pi: float
    spike_cost_fraction: float


def pi_for_budget(
    s: Tensor,
    m: Tensor | int,
    cost: Tensor,
    spike_cost_fraction: float,
    *,
    n_data: int,
    lambda1: float,
    lambda0: float,
) -> PiChoice:
    """Smallest spike set, in q_g order, whose cost reaches `spike_cost_fraction` of the total, and its pi.

    The spiked cost is a step function of logit(pi), so instead of bisecting on logit(pi) the groups are
    sorted by q_g and logit(pi) is put midway between the last spiked and first slab group: the limit the
    bisection would converge to. Groups with equal q_g go together, so ties can overshoot the target.
    """
    if not 0.0 <= spike_cost_fraction <= 1.0:
        raise ValueError(f"spike_cost_fraction must be in [0, 1], got {spike_cost_fraction}")
    q = spike_statistic(s, m, n_data=n_data, lambda1=lambda1, lambda0=lambda0).flatten().cpu()
    cost64 = torch.as_tensor(cost, dtype=torch.float64).flatten().cpu().expand_as(q)
    if q.numel() == 0:
        raise ValueError("pi_for_budget needs at least one group")
    if bool((cost64 < 0).any()):
        raise ValueError("group costs must be non-negative")
    order = torch.argsort(q, stable=True)
    q_sorted, cum = q[order], torch.cumsum(cost64[order], 0)
    total = float(cum[-1])
    if spike_cost_fraction == 0.0 or total == 0.0:
        k = 0
    else:
        k = int(torch.searchsorted(cum, torch.tensor([spike_cost_fraction * total], dtype=torch.float64))) + 1
        k = min(k, q.numel())
    # Spiked set is {g : q_g < t}; extend k over ties so the set is exactly what that rule gives.
    while 0 < k < q.numel() and q_sorted[k] == q_sorted[k - 1]:
        k += 1
    if k == 0:
        t = float(q_sorted[0]) - 1.0
    elif k == q.numel():
        t = float(q_sorted[-1]) + 1.0
    else:
        t = 0.5 * (float(q_sorted[k - 1]) + float(q_sorted[k]))
    spiked = float(cost64[q < t].sum()) / total if total > 0 else 0.0
    pi = float(torch.sigmoid(torch.tensor(-t, dtype=torch.float64)))
    return PiChoice(logit_pi=-t, pi=pi, spike_cost_fraction=spiked)


def ramp(epoch: float, start_epoch: float, target_epoch: float, target: float) -> float:
    """Spiked-fraction schedule: 0 until `start_epoch`, linear to `target` at `target_epoch`, then held."""
    if target_epoch < start_epoch:
        raise ValueError(f"target_epoch ({target_epoch}) must not precede start_epoch ({start_epoch})")
    if epoch <= start_epoch:
        return 0.0 if epoch < target_epoch else target
    if epoch >= target_epoch:
        return target
    return target * (epoch - start_epoch) / (target_epoch - start_epoch)


def cost_price(evidence: Tensor, cost: Tensor, share: float) -> float:
    """The price per unit of cost at which the groups whose evidence is worth less than their cost (evidence <
    price * cost) hold `share` of the total cost: a greedy knapsack cut in evidence-per-cost order, put midway
    between the last group under it and the first above it. 0 when `share` is 0."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    cost64 = cost.detach().double().cpu().clamp_min(1e-30)
    ratio = evidence.detach().double().cpu() / cost64
    if share == 0.0 or ratio.numel() == 0:
        return 0.0
    order = torch.argsort(ratio, stable=True)
    cumulative = torch.cumsum(cost64[order], 0) / cost64.sum()
    k = int(torch.searchsorted(cumulative, torch.tensor([share], dtype=torch.float64)))
    k = min(k + 1, ratio.numel())  # the groups order[:k] reach the share
    ranked = ratio[order]
    upper = float(ranked[k]) if k < ratio.numel() else float(ranked[-1]) * 2.0 + 1e-30
    return 0.5 * (float(ranked[k - 1]) + upper)


def evidence_slab_probability(evidence: Tensor, stderr: Tensor, cost: Tensor, price: float) -> Tensor:
    """p*_g = P(evidence_g > price * cost_g) when the chain's estimate of the evidence is Gaussian with this
    mean and standard error: near 0 or 1 only where the chain is sure, and back towards the slab as soon as
    the evidence rises (float32)."""
    margin = evidence.double() - price * cost.double().to(evidence.device)
    z = margin / stderr.double().clamp_min(1e-30)
    return (0.5 * torch.erfc(-z / math.sqrt(2.0))).float()
