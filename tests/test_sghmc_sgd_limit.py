"""Without noise and with tau frozen at 1/2, AdaptiveSGHMC is heavy-ball (or Nesterov) SGD at lr = C2 / 2:
the classical form of SPEC 1 and the `nesterov` form each follow torch.optim.SGD step for step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compressor.bayes import AdaptiveSGHMC


def _pair(nesterov: bool) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, AdaptiveSGHMC]:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    ours = copy.deepcopy(ref)
    weights = [m.weight for m in ref if isinstance(m, nn.Linear)]
    biases = [m.bias for m in ref if isinstance(m, nn.Linear)]
    sgd = torch.optim.SGD([{"params": weights, "weight_decay": 1e-2}, {"params": biases, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9, nesterov=nesterov)
    w2 = [m.weight for m in ours if isinstance(m, nn.Linear)]
    b2 = [m.bias for m in ours if isinstance(m, nn.Linear)]
    # eta = 0 freezes tau at sigmoid(0) = 1/2; N = 1e18 makes the injected noise ~1e-19
    sampler = AdaptiveSGHMC([{"params": w2}, {"params": b2, "weight_decay": 0.0, "noise": False}],
                            n_data=10**18, lr=0.1, beta1=0.9, eta=0.0, weight_decay=1e-2, nesterov=nesterov)
    return ref, ours, sgd, sampler


@pytest.mark.parametrize("nesterov", [False, True])
def test_noiseless_sampler_is_sgd_with_momentum(nesterov: bool) -> None:
    ref, ours, sgd, sampler = _pair(nesterov)
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    for _ in range(25):
        for model, opt in ((ref, sgd), (ours, sampler)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_nesterov_changes_the_trajectory() -> None:
    """Guards the test above against both forms silently doing the same thing."""
    _, plain, _, classical = _pair(False)
    _, look_ahead, _, nest = _pair(True)
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    for model, opt in ((plain, classical), (look_ahead, nest)):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert max(float((a - b).detach().abs().max()) for a, b in zip(plain.parameters(), look_ahead.parameters())) > 1e-4
