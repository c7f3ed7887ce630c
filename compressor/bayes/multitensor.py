"""The multi-tensor AdaptiveSGHMC step of one bucket (compressor.bayes.buckets), the non-fused path.

The update is that of docs/algorithm.md#1-the-optimizer-adaptive-sghmc, as compressor.bayes.sghmc states
it. Ops that touch only state (m, rho, xi) run once on the bucket's flat buffers; the few that touch w or g
are multi-tensor (foreach) ops over the params, or loops when `fe` is False. xi comes from the bucket's
generator; the generator state before each draw is kept in `xi_states` (the optimizer's, checkpointed), so
that xi_prev can be redrawn when it is not stored and a rebuilt or resumed bucket can continue its stream.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from compressor.bayes.buckets import _add_, _addcmul_, _Bucket, _views


def step_bucket(
    b: _Bucket, grads: list[Tensor], *, temp: float, n_data: int, fe: bool, xi_states: dict[str, Tensor]
) -> None:
    """One update of bucket `b` at temperature `temp`; `grads` of the mean loss over `n_data` examples.

    A bucket without noise keeps no rho: plain momentum descent on its weight decay, at the constant tau 0.5.
    """
    if b.rho is None:
        _add_(b.params, _update_momentum(b, grads, None, 0.0, fe), 0.5, fe)
        return
    assert b.generator is not None
    group = b.group
    c2, beta1, eta = group["lr"], group["beta1"], group["eta"]
    c = math.sqrt(c2)
    buf = torch.empty_like(b.momentum)
    buf_views = _views(buf, b.params)
    saved = xi_states.get(b.key)
    if b.fresh_generator and saved is not None and (b.xi is not None or not eta):
        # Rebuilt or resumed: replay xi_prev so the stream continues where it left off (and a stored
        # xi equals the replayed one even when the checkpoint came from "regenerate").
        b.generator.set_state(saved)
        draw_xi(b, buf)
    b.fresh_generator = False
    if eta:
        update_rho(b, grads, buf, buf_views, eta, temp, c2, n_data=n_data, fe=fe, prev_state=saved)
    xi_states[b.key] = b.generator.get_state()
    xi = draw_xi(b, buf)
    noise = math.sqrt(2.0 + 2.0 * beta1 * beta1) * c**1.5 * temp
    step_views = _update_momentum(b, grads, xi, noise, fe)
    torch.sigmoid(b.rho, out=buf)
    _addcmul_(b.params, buf_views, step_views, 1.0, fe)


def _update_momentum(
    b: _Bucket, grads: list[Tensor], xi: Tensor | None, noise: float, fe: bool
) -> list[Tensor]:
    """m <- beta1 m + d, d = noise xi - beta2 C2 (g + lam w) (no noise term when `xi` is None); return what
    w moves along, per param, times tau: m itself, or beta1 m + d with `nesterov`."""
    group = b.group
    c2, beta1, beta2, wd = group["lr"], group["beta1"], group["beta2"], group["weight_decay"]
    if group["nesterov"]:
        d = torch.zeros_like(b.momentum) if xi is None else torch.mul(xi, noise)
        add_gradient(b, _views(d, b.params), grads, beta2 * c2, wd, fe)
        b.momentum.mul_(beta1).add_(d)
        return _views(d.add_(b.momentum, alpha=beta1), b.params)
    if xi is None:
        b.momentum.mul_(beta1)
    else:
        b.momentum.mul_(beta1).add_(xi, alpha=noise)
    add_gradient(b, b.m_views, grads, beta2 * c2, wd, fe)
    return b.m_views


def draw_xi(b: _Bucket, buf: Tensor) -> Tensor:
    """Draw xi (into b.xi, rounded to its dtype, if stored); return the tensor holding what to inject."""
    assert b.generator is not None
    if b.xi is None:
        return buf.normal_(generator=b.generator)
    if b.xi.dtype == buf.dtype:
        return b.xi.normal_(generator=b.generator)
    buf.normal_(generator=b.generator)
    b.xi.copy_(buf)
    return buf.copy_(b.xi)  # inject the rounded value, the one the next rho update will see


def update_rho(
    b: _Bucket,
    grads: list[Tensor],
    buf: Tensor,
    buf_views: list[Tensor],
    eta: float,
    temp: float,
    c2: float,
    *,
    n_data: int,
    fe: bool,
    prev_state: Tensor | None,
) -> None:
    """rho -= eta * (T^2 C^3 lam tau + T C^1.5 xi_prev g - 1/(tau N)), every term from the old tau.

    Skipped when eta = 0 (rho cannot move), saving the redraw of xi_prev in "regenerate" mode. `prev_state`
    is the generator state before the previous draw; without a previous draw (None) xi_prev = 0 and its term
    is left out.
    """
    assert b.rho is not None and b.generator is not None
    c = math.sqrt(c2)
    prior = eta * temp * temp * c2 * c
    torch.sigmoid(b.rho, out=buf)
    if b.group["weight_decay"]:
        b.rho.add_(buf, alpha=-prior * b.group["weight_decay"])
    for i, extra in b.extras:
        b.rho_views[i].addcmul_(buf_views[i], extra, value=-prior)
    b.rho.addcdiv_(torch.ones((), device=buf.device, dtype=buf.dtype), buf, value=eta / n_data)
    if prev_state is None:
        return
    if b.xi is None:
        b.generator.set_state(prev_state)
        buf.normal_(generator=b.generator)
        xi_views = buf_views
    elif b.xi.dtype == buf.dtype:
        xi_views = b.xi_views
    else:
        buf.copy_(b.xi)  # one flat cast, so the multi-tensor op below sees a single dtype
        xi_views = buf_views
    _addcmul_(b.rho_views, xi_views, grads, -eta * temp * c**1.5, fe)


def add_gradient(
    b: _Bucket, views: list[Tensor], grads: list[Tensor], step: float, wd: float, fe: bool
) -> None:
    """views -= step * (g + lam w): the drift of the momentum update, lam = weight decay + extra."""
    _add_(views, grads, -step, fe)
    if wd:
        _add_(views, b.params, -step * wd, fe)
    for i, extra in b.extras:
        views[i].addcmul_(b.params[i], extra, value=-step)
