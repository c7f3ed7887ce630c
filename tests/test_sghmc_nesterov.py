"""The `nesterov` form of AdaptiveSGHMC next to the classical one (docs/algorithm.md, section 1). Without noise and with tau frozen
at 1/2 each is SGD at lr = C2 / 2 (heavy-ball or Nesterov) step for step; with noise, the Nesterov form still
samples the exact posterior of a conjugate Gaussian model."""

from __future__ import annotations

import copy
import math

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


def test_nesterov_form_samples_the_exact_posterior() -> None:
    """Bayesian linear regression, N = 1000: 256 chains, T = 1/sqrt(N), tau frozen (eta 0) at 1/2 and C2 chosen
    so T_eff = 1 (see test_bayes.py). Its iterates are the classical chain's plus the look-ahead tau beta1 m,
    which is O(C2) and leaves mean and covariance within a few per cent."""
    n, d, lam, beta1, tau = 1000, 4, 5e-3, 0.9, 0.5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d, generator=gen, dtype=torch.float64) + torch.randn(n, generator=gen, dtype=torch.float64)
    a, b = x.T @ x / n, x.T @ y / n
    cov = torch.linalg.inv(n * (a + lam * torch.eye(d, dtype=torch.float64)))
    mu = cov @ (n * b)
    c2 = ((1 - beta1) / ((1 + beta1**2) * tau)) ** 2
    w = nn.Parameter(torch.zeros(256, d, dtype=torch.float64))
    opt = AdaptiveSGHMC([w], n_data=n, lr=c2, beta1=beta1, eta=0.0, weight_decay=lam, temperature="1/sqrt(N)",
                        seed=3, nesterov=True)
    kept = []
    for t in range(1000):
        w.grad = w.detach() @ a - b
        opt.step()
        if t >= 300:
            kept.append(w.detach().clone())
    samples = torch.cat(kept)
    assert ((samples.mean(0) - mu).abs() / cov.diagonal().sqrt()).max() < 0.1
    inv_chol = torch.linalg.inv(torch.linalg.cholesky(cov))
    eigs = torch.linalg.eigvalsh(inv_chol @ torch.cov(samples.T) @ inv_chol.T)
    assert eigs.min() > 1 / 1.5 and eigs.max() < 1.5
    assert eigs.min() > 0.85 and eigs.max() < 1.15, eigs
    assert math.isclose(opt.diagnostics()["t_eff"], 1.0, rel_tol=1e-6)
