"""Adaptive variational-Bayes optimizer: preconditioned SGHMC with a mirror-descent preconditioner (SPEC 1).

Per step, for each weight w with gradient g of the *mean* loss (C = sqrt(C2), C2 = group["lr"]):

    rho <- rho - eta * (T^2 C^3 lam tau + T C^1.5 xi_prev g - 1 / (tau N));   tau = sigmoid(rho)
    xi  ~ N(0, I);   m <- beta1 m - beta2 C2 (g + lam w) + sqrt(2 + 2 beta1^2) C^1.5 T xi
    w   <- (w + tau m) * keep

Memory: m, rho and (optionally) xi are the only full-size state; tau is recomputed from rho. xi_prev, needed
by the rho update, is either stored (`xi_storage` "fp16"/"bf16"/"fp32": one draw per step, +2 or 4 B/param) or
regenerated ("regenerate": 0 B/param, two draws per step): each (group, device, dtype) bucket owns a
generator, the generator state before drawing xi_t is saved, and step t+1 rewinds to it to redraw xi_t for its
rho update before drawing xi_{t+1}. On CPU torch's generator (mt19937) costs more than a whole SGD step per
draw, so storing is faster there; on CUDA (Philox) a draw is cheaper than the extra memory traffic. A stored
xi is rounded once and that rounded value is both injected into m and used as xi_prev, so the two stay one
chain. The state of a bucket lives in flat buffers (params get views into them), so the parts of the update
that touch only state run as one kernel per bucket and only four multi-tensor (foreach) ops touch w and g.
The fused step (`fused`, compressor.bayes.fused) instead makes the params views of one flat buffer too and
runs the whole update as one compiled loop, with the noise hashed from (seed, step, index) inside it; there
`xi_storage` chooses between recomputing xi_prev from the hash ("regenerate") and storing it, as here.

Sampling temperature: with tau held fixed the chain's stationary variance is T_eff times the posterior's,
T_eff = (1 + beta1^2) / ((1 - beta1) beta2) * tau * C * T^2 * N (see `diagnostics`). T = 1/sqrt(N) gives
T_eff = 1.12 tau C at the paper's beta1 = 0.1, which needs C2 ~ 3 at tau = 0.5: too coarse a step to
sample accurately. With beta1 = 0.9 the same T needs tau C = 0.055 (C2 = 0.0122 at tau = 0.5), a fine step.
The injected noise scales with tau rather than sqrt(tau), so the adaptive tau changes T_eff as it moves.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors

from compressor.bayes import fused as fused_kernel
from compressor.bayes.temperature import resolve_temperature

XiStorage = Literal["auto", "regenerate", "fp16", "bf16", "fp32"]
Fused = bool | Literal["auto"]
_XI_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class _Bucket:
    """Params of one group on one device with one dtype; m and rho of all of them are one flat buffer each."""

    key: str
    group: dict[str, Any]
    params: list[Tensor]
    momentum: Tensor
    m_views: list[Tensor]
    rho: Tensor | None
    rho_views: list[Tensor]
    generator: torch.Generator | None
    xi: Tensor | None = None
    xi_views: list[Tensor] = field(default_factory=list)
    fresh_generator: bool = True
    extras: list[tuple[int, Tensor]] = field(default_factory=list)
    masks: list[tuple[int, Tensor]] = field(default_factory=list)
    flat: fused_kernel.FlatBucket | None = None  # set when this bucket takes the fused one-pass step


def _views(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    # One C++ loop (narrow + view_as) instead of a Python slice per parameter: this runs every step.
    return list(_unflatten_dense_tensors(flat, params))


def _bucket_seed(seed: int, key: str) -> int:
    # Independent streams per bucket, reproducible across processes (unlike Python's salted hash()).
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _validate_group(group: dict[str, Any]) -> None:
    if group["lr"] < 0:
        raise ValueError(f"lr (C2) must be >= 0, got {group['lr']}")
    if not 0.0 <= group["beta1"] < 1.0:
        raise ValueError(f"beta1 must be in [0, 1), got {group['beta1']}")
    if group["beta2"] <= 0:
        raise ValueError(f"beta2 must be positive, got {group['beta2']}")
    if group["eta"] < 0:
        raise ValueError(f"eta must be >= 0, got {group['eta']}")
    if group["weight_decay"] < 0:
        raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']}")
    if not isinstance(group["noise"], bool):
        raise TypeError(f"noise must be a bool, got {group['noise']!r}")
    if not isinstance(group["nesterov"], bool):
        raise TypeError(f"nesterov must be a bool, got {group['nesterov']!r}")


class AdaptiveSGHMC(torch.optim.Optimizer):
    """Preconditioned SGHMC of SPEC section 1, for gradients of the mean loss over `n_data` examples.

    `lr` is C2 (the engine overwrites group["lr"] with the scheduled value every step). Param groups may
    override lr, beta1, beta2, eta, weight_decay and `noise`. A group with noise=False (BatchNorm, biases
    excluded from the prior) gets no noise and keeps no rho: its tau is the constant 0.5, the initial tau
    of every other weight, so it learns at the same rate; it is plain momentum descent on its weight decay.

    A parameter with no gradient at a step is updated with g = 0 (it keeps sampling from its prior); leave
    frozen parameters out of the optimizer instead.

    `foreach` (default on) uses multi-tensor ops for the four per-parameter ops; False loops over tensors
    instead, with identical results on CPU. `rho_dtype` defaults to the parameter dtype. bfloat16 saves
    2 B/param of memory traffic but cannot represent the per-step entropy drift eta/(tau N) (4e-6 at
    N = 50,000) once |rho| > 2e-3, so tau then freezes near 0.5005 (fp32 rho moves on, e.g. to 0.503 in
    SPEC's ResNet-20 run).

    `nesterov` (default off: the paper's form) moves w by tau * (beta1 m_new + d) instead of tau * m_new,
    d = m_new - beta1 m being this step's drift plus noise. Then y = w - tau beta1 m follows the classical
    chain with its gradient taken at the look-ahead point w, as Nesterov SGD is heavy-ball momentum with a
    look-ahead gradient; the offset is O(C2), so small steps sample the same posterior (tested). On short
    CNN budgets it trains like SGD with Nesterov momentum, which the classical form trails by several points
    (benchmarks/RESULTS.md).

    `xi_storage` chooses how xi_prev reaches the rho update: "regenerate" (redraw it, no memory), "fp16",
    "bf16" or "fp32" (store it; fp16 keeps 11 significant bits of a N(0, 1) draw, bf16 only 8, both 2 B),
    or "auto": "fp16" for CPU buckets, where a draw is the dominant cost, "regenerate" elsewhere. "fp32"
    (when that is the parameter dtype) reproduces "regenerate" bit for bit.

    `fused` selects the one-pass step of `compressor.bayes.fused`: one torch.compile'd elementwise kernel per
    bucket, noise from a counter-based hash, tau for the weight update to first order from the old tau (one
    exp per element instead of two; relative error drho^2 / 2, 5e-11 at the step sizes rho takes), and
    the params turned into views of one flat buffer per bucket. `xi_storage` applies as above, except that
    "auto" stores xi_prev in fp32 on CPU (12 B/param: there the step is compute-bound, a second Box-Muller
    costs more than the memory traffic and fp16's conversions cost more than its 2 B saved) and recomputes
    it from the hash elsewhere (8 B/param, m and rho only). True uses it
    wherever it compiles; "auto" on CUDA only (on CPU it saves ~1 ms per ResNet-20 step against a one-off
    compile of tens of seconds, see benchmarks/RESULTS.md); False (the default until the CUDA path has been
    run on a GPU: it is only tested on CPU) never. Buckets it cannot take (params not dense in memory, storage-sharing
    params, fewer than 4 elements, a failed compile: one warning) use the multi-tensor step. The fused noise
    stream differs from the generator's, so a checkpoint resumed on the other path starts a fresh stream (no
    xi_prev term at its first step).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        n_data: int,
        lr: float,
        beta1: float = 0.1,
        beta2: float = 1.0,
        eta: float = 0.1,
        weight_decay: float = 5e-4,
        temperature: float | str = "1/N",
        seed: int = 0,
        foreach: bool | None = None,
        rho_dtype: torch.dtype | None = None,
        xi_storage: XiStorage = "auto",
        nesterov: bool = False,
        fused: Fused = False,
    ) -> None:
        if isinstance(n_data, bool) or not isinstance(n_data, int) or n_data <= 0:
            raise ValueError(f"n_data must be a positive int, got {n_data!r}")
        if rho_dtype is not None and not rho_dtype.is_floating_point:
            raise ValueError(f"rho_dtype must be a floating-point dtype, got {rho_dtype}")
        if xi_storage not in ("auto", "regenerate", *_XI_DTYPES):
            raise ValueError(f"xi_storage must be auto, regenerate, fp16, bf16 or fp32, got {xi_storage!r}")
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused must be True, False or 'auto', got {fused!r}")
        self.n_data = n_data
        self.temperature = resolve_temperature(temperature, n_data)
        self.seed = int(seed)
        self.foreach = foreach is not False
        self.rho_dtype = rho_dtype
        self.xi_storage = xi_storage
        self.fused = fused
        self.steps = 0
        self._buckets: list[_Bucket] | None = None
        self._built: list[_Bucket] = []  # the last buckets built, whose flat storage a rebuild may reuse
        self._hooks_dirty = True
        self._xi_states: dict[str, Tensor] = {}
        self._hash_steps: dict[str, int] = {}  # fused buckets: the step counter of the last injected xi
        defaults = {
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "eta": eta,
            "weight_decay": weight_decay,
            "noise": True,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)
        self._lay_out_fused()

    def _lay_out_fused(self) -> None:
        """Build buckets now if some may be fused, so params move to their flat storage before a forward pass
        is traced or a DDP wrapper is built around them rather than at the first step."""
        devices = {p.device.type for group in self.param_groups for p in group["params"]}
        if self.fused is True or (self.fused == "auto" and "cuda" in devices):
            self._ensure_buckets()

    @property
    def fused_active(self) -> bool:
        """Whether any bucket takes the fused one-pass step."""
        return any(b.flat is not None for b in self._ensure_buckets())

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _validate_group(self.param_groups[-1])
        self._buckets = None

    # ---------------------------------------------------------------- structure hooks (E-step, pruning)

    def _check_member(self, param: Tensor, what: Tensor) -> Tensor:
        if not any(param is p for group in self.param_groups for p in group["params"]):
            raise ValueError("parameter is not managed by this optimizer")
        what = what.detach().to(device=param.device, dtype=param.dtype)
        try:
            fits = torch.broadcast_shapes(what.shape, param.shape) == param.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"shape {tuple(what.shape)} does not broadcast to parameter {tuple(param.shape)}"
            )
        return what.clone()

    def set_extra_decay(self, param: Tensor, extra: Tensor | None) -> None:
        """Per-group prior precision on top of the group's weight_decay (element decay = wd + extra)."""
        if extra is None:
            self.state[param].pop("extra_decay", None)
        else:
            self.state[param]["extra_decay"] = self._check_member(param, extra)
        self._hooks_dirty = True

    @torch.no_grad()
    def set_keep_mask(self, param: Tensor, keep: Tensor | None) -> None:
        """Hard-prune: w and m are multiplied by the 0/1 `keep` now and after every step (None lifts it)."""
        if keep is None:
            self.state[param].pop("keep", None)
        else:
            keep = self._check_member(param, keep)
            if not bool(((keep == 0) | (keep == 1)).all()):
                raise ValueError("keep mask must contain only 0 and 1")
            self.state[param]["keep"] = keep
            param.mul_(keep)
            if "momentum_buffer" in self.state[param]:
                self.state[param]["momentum_buffer"].mul_(keep)
        self._hooks_dirty = True

    # ---------------------------------------------------------------- state layout

    def _ensure_buckets(self) -> list[_Bucket]:
        if self._buckets is not None and not all(b.flat is None or b.flat.intact() for b in self._buckets):
            self._buckets = None  # someone replaced a fused param's storage (p.data = ...): lay out again
        if self._buckets is None:
            ours = {b.flat.weights.data_ptr() for b in self._built if b.flat is not None}
            self._buckets = [
                b for gi, group in enumerate(self.param_groups) for b in self._make_buckets(gi, group, ours)
            ]
            self._built = self._buckets
            self._hooks_dirty = True
        if self._hooks_dirty:
            for b in self._buckets:
                b.extras = [
                    (i, self.state[p]["extra_decay"])
                    for i, p in enumerate(b.params)
                    if "extra_decay" in self.state[p]
                ]
                b.masks = [
                    (i, self.state[p]["keep"]) for i, p in enumerate(b.params) if "keep" in self.state[p]
                ]
                if b.flat is not None:
                    w = b.params[0]
                    xi_dtype = b.flat.xi.dtype if b.flat.xi is not None else None
                    rho_dtype = b.flat.rho.dtype
                    if b.extras and not fused_kernel.available(w.device, w.dtype, rho_dtype, True, xi_dtype):
                        b.flat = None
                    else:
                        b.flat.set_decay(b.group["weight_decay"], b.extras)
            self._hooks_dirty = False
        return self._buckets

    def _make_buckets(self, gi: int, group: dict[str, Any], ours: set[int]) -> list[_Bucket]:
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in group["params"]:
            by_kind.setdefault((p.device, p.dtype), []).append(p)
        buckets = []
        for (device, dtype), params in by_kind.items():
            # Keyed by device *kind* (cuda, not cuda:3), so every data-parallel rank seeds the same noise and
            # a checkpoint's generator states fit every rank; a second device of a kind gets its own key.
            same_kind = list(dict.fromkeys(d for d, _ in by_kind if d.type == device.type))
            place = (
                device.type if same_kind.index(device) == 0 else f"{device.type}#{same_kind.index(device)}"
            )
            key = f"{gi}|{place}|{str(dtype).removeprefix('torch.')}"
            numel = sum(p.numel() for p in params)
            fuse = self._fusable(device, dtype, params, ours, self._xi_dtype(device, fused=True))
            xi_dtype = self._xi_dtype(device, fused=fuse)
            # Fused buckets get padded buffers: the kernel splits them in halves.
            size = fused_kernel.padded_numel(numel) if fuse else numel
            rho_dtype = self.rho_dtype or dtype
            momentum_full = torch.zeros(size, device=device, dtype=dtype)
            rho_full = torch.zeros(size, device=device, dtype=rho_dtype) if fuse or group["noise"] else None
            momentum = momentum_full[:numel]
            rho, generator, xi = None, None, None
            # A fused bucket without noise gets the same (zero, unused) buffers as one with noise, so both run
            # one compiled variant; only buckets with noise keep rho and xi as state.
            xi_full = torch.zeros(size, device=device, dtype=xi_dtype) if xi_dtype is not None and fuse else None
            if group["noise"]:
                assert rho_full is not None
                rho = rho_full[:numel]
                generator = torch.Generator(device=device)
                generator.manual_seed(_bucket_seed(self.seed, key))
                if xi_dtype is not None:  # xi_prev = 0 before any draw
                    xi = torch.zeros(numel, device=device, dtype=xi_dtype) if xi_full is None else xi_full[:numel]
            flats = {"momentum_buffer": momentum, "rho": rho, "xi": xi}
            view = fused_kernel.layout_views if fuse else _views  # fused: element order is the params' memory's
            views = {name: view(flat, params) if flat is not None else [] for name, flat in flats.items()}
            for i, p in enumerate(params):
                state = self.state[p]
                # Existing (or just loaded) per-param tensors move into the flat buffers.
                for name, flat in flats.items():
                    if flat is None:
                        state.pop(name, None)
                        continue
                    if name in state:
                        views[name][i].copy_(state[name])
                    state[name] = views[name][i]
            m_views, rho_views, xi_views = views.values()
            bucket = _Bucket(key, group, params, momentum, m_views, rho, rho_views, generator, xi, xi_views)
            if fuse:
                assert rho_full is not None  # for a group without noise: zeros that keep tau at 0.5 (and no xi)
                seed = _bucket_seed(self.seed, key)
                bucket.flat = fused_kernel.FlatBucket(params, momentum_full, rho_full, seed, xi_full)
            buckets.append(bucket)
        return buckets

    def _fusable(
        self, device: torch.device, dtype: torch.dtype, params: list[Tensor], ours: set[int],
        xi_dtype: torch.dtype | None,
    ) -> bool:
        """Whether a bucket of these params takes the fused step (see the class docstring); `ours` holds the
        storages of the flat buffers laid out before, whose views may be laid out again."""
        if self.fused is False or (self.fused == "auto" and device.type != "cuda"):
            return False
        problem = fused_kernel.layout_problem(params, ours)
        if problem is not None:
            if self.fused is True:
                warnings.warn(f"fused AdaptiveSGHMC step not used for {len(params)} parameter(s): {problem}",
                              RuntimeWarning, stacklevel=4)
            return False
        return fused_kernel.available(device, dtype, self.rho_dtype or dtype, False, xi_dtype)

    def _xi_dtype(self, device: torch.device, fused: bool) -> torch.dtype | None:
        """Storage dtype of xi for a bucket on `device` (taking the fused step or not), None to regenerate it."""
        if self.xi_storage == "auto":
            if device.type != "cpu":
                return None
            return torch.float32 if fused else torch.float16
        return _XI_DTYPES.get(self.xi_storage)

    # ---------------------------------------------------------------- the update

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for bucket in self._ensure_buckets():
            grads = self._grads(bucket)
            if bucket.flat is None:
                self._step_bucket(bucket, grads)
            else:
                self._step_fused(bucket, grads)
            if bucket.masks:
                idx = [i for i, _ in bucket.masks]
                keeps = [k for _, k in bucket.masks]
                _mul_([bucket.params[i] for i in idx], keeps, self.foreach)
                _mul_([bucket.m_views[i] for i in idx], keeps, self.foreach)
        self.steps += 1
        return loss

    @staticmethod
    def _grads(b: _Bucket) -> list[Tensor]:
        grads = []
        for p in b.params:
            if p.grad is None:
                grads.append(torch.zeros_like(p))
            elif p.grad.is_sparse:
                raise RuntimeError("AdaptiveSGHMC does not support sparse gradients")
            else:
                grads.append(p.grad)
        return grads

    def _step_fused(self, b: _Bucket, grads: list[Tensor]) -> None:
        """The one-pass step; a group without noise runs it with every noise/preconditioner term zero."""
        assert b.flat is not None
        group = b.group
        c2, beta1, temp = group["lr"], group["beta1"], self.temperature
        c = math.sqrt(c2)
        noisy = b.rho is not None
        eta = group["eta"] if noisy else 0.0
        nesterov = group["nesterov"]
        b.flat.step(
            grads,
            self.steps,
            self._hash_steps.get(b.key) if noisy else None,
            wd=group["weight_decay"],
            prior=eta * temp * temp * c2 * c,
            data=eta * temp * c**1.5,
            entropy=eta / self.n_data,
            beta1=beta1,
            step=group["beta2"] * c2,
            noise_scale=math.sqrt(2.0 + 2.0 * beta1 * beta1) * c**1.5 * temp if noisy else 0.0,
            look=beta1 if nesterov else 1.0,
            drift=1.0 if nesterov else 0.0,
        )
        if noisy:
            self._hash_steps[b.key] = self.steps

    def _step_bucket(self, b: _Bucket, grads: list[Tensor]) -> None:
        group = b.group
        c2, beta1, beta2, wd = group["lr"], group["beta1"], group["beta2"], group["weight_decay"]
        c = math.sqrt(c2)
        temp = self.temperature
        fe = self.foreach

        if b.rho is None:
            if group["nesterov"]:
                d = torch.zeros_like(b.momentum)
                d_views = _views(d, b.params)
                self._add_gradient(b, d_views, grads, beta2 * c2, wd, fe)
                b.momentum.mul_(beta1).add_(d)
                _add_(b.params, _views(d.add_(b.momentum, alpha=beta1), b.params), 0.5, fe)
            else:
                b.momentum.mul_(beta1)
                self._add_gradient(b, b.m_views, grads, beta2 * c2, wd, fe)
                _add_(b.params, b.m_views, 0.5, fe)
        else:
            assert b.generator is not None
            eta = group["eta"]
            buf = torch.empty_like(b.momentum)
            buf_views = _views(buf, b.params)
            saved = self._xi_states.get(b.key)
            if b.fresh_generator and saved is not None and (b.xi is not None or not eta):
                # Rebuilt or resumed: replay xi_prev so the stream continues where it left off (and a stored
                # xi equals the replayed one even when the checkpoint came from "regenerate").
                b.generator.set_state(saved)
                self._draw_xi(b, buf)
            b.fresh_generator = False
            if eta:
                self._update_rho(b, grads, buf, buf_views, eta, temp, c2, has_prev=saved is not None)
            self._xi_states[b.key] = b.generator.get_state()
            xi = self._draw_xi(b, buf)
            noise = math.sqrt(2.0 + 2.0 * beta1 * beta1) * c**1.5 * temp
            if group["nesterov"]:
                d = torch.mul(xi, noise)
                d_views = _views(d, b.params)
                self._add_gradient(b, d_views, grads, beta2 * c2, wd, fe)
                b.momentum.mul_(beta1).add_(d)
                step_views = _views(d.add_(b.momentum, alpha=beta1), b.params)
            else:
                b.momentum.mul_(beta1).add_(xi, alpha=noise)
                self._add_gradient(b, b.m_views, grads, beta2 * c2, wd, fe)
                step_views = b.m_views
            torch.sigmoid(b.rho, out=buf)
            _addcmul_(b.params, buf_views, step_views, 1.0, fe)

    @staticmethod
    def _draw_xi(b: _Bucket, buf: Tensor) -> Tensor:
        """Draw xi (into b.xi, rounded to its dtype, if stored); return the tensor holding what to inject."""
        assert b.generator is not None
        if b.xi is None:
            return buf.normal_(generator=b.generator)
        if b.xi.dtype == buf.dtype:
            return b.xi.normal_(generator=b.generator)
        buf.normal_(generator=b.generator)
        b.xi.copy_(buf)
        return buf.copy_(b.xi)  # inject the rounded value, the one the next rho update will see

    def _update_rho(
        self,
        b: _Bucket,
        grads: list[Tensor],
        buf: Tensor,
        buf_views: list[Tensor],
        eta: float,
        temp: float,
        c2: float,
        *,
        has_prev: bool,
    ) -> None:
        """rho -= eta * (T^2 C^3 lam tau + T C^1.5 xi_prev g - 1/(tau N)), every term from the old tau.

        Skipped when eta = 0 (rho cannot move), saving the redraw of xi_prev in "regenerate" mode. Without a
        previous draw (`has_prev` False) xi_prev = 0 and its term is left out.
        """
        assert b.rho is not None and b.generator is not None
        c = math.sqrt(c2)
        prior = eta * temp * temp * c2 * c
        torch.sigmoid(b.rho, out=buf)
        if b.group["weight_decay"]:
            b.rho.add_(buf, alpha=-prior * b.group["weight_decay"])
        for i, extra in b.extras:
            b.rho_views[i].addcmul_(buf_views[i], extra, value=-prior)
        b.rho.addcdiv_(torch.ones((), device=buf.device, dtype=buf.dtype), buf, value=eta / self.n_data)
        if not has_prev:
            return
        if b.xi is None:
            b.generator.set_state(self._xi_states[b.key])
            buf.normal_(generator=b.generator)
            xi_views = buf_views
        elif b.xi.dtype == buf.dtype:
            xi_views = b.xi_views
        else:
            buf.copy_(b.xi)  # one flat cast, so the multi-tensor op below sees a single dtype
            xi_views = buf_views
        _addcmul_(b.rho_views, xi_views, grads, -eta * temp * c**1.5, self.foreach)

    @staticmethod
    def _add_gradient(
        b: _Bucket, views: list[Tensor], grads: list[Tensor], step: float, wd: float, fe: bool
    ) -> None:
        """views -= step * (g + lam w): the drift of the momentum update, lam = weight decay + extra."""
        _add_(views, grads, -step, fe)
        if wd:
            _add_(views, b.params, -step * wd, fe)
        for i, extra in b.extras:
            views[i].addcmul_(b.params[i], extra, value=-step)

    # ---------------------------------------------------------------- reporting

    @staticmethod
    def _live_tau(b: _Bucket) -> Tensor:
        assert b.rho is not None
        tau = torch.sigmoid(b.rho.float())
        if not b.masks:
            return tau
        live = torch.ones_like(tau, dtype=torch.bool)
        live_views = (_views if b.flat is None else fused_kernel.layout_views)(live, b.params)
        for i, keep in b.masks:
            live_views[i].copy_(keep.expand_as(live_views[i]) != 0)
        return tau[live]

    def state_nbytes(self) -> int:
        """Bytes of optimizer state (flat buffers, extras, masks, generator states), each storage once.

        Fused buckets add their per-element decay (while extra decay is set) and, without noise, the zero rho
        and the unused xi that let them share the compiled variant of those with noise.
        """
        tensors = [v for state in self.state.values() for v in state.values() if isinstance(v, Tensor)]
        for b in self._buckets or []:
            if b.flat is not None:
                quiet = (b.flat.rho, b.flat.xi) if b.rho is None else ()
                tensors += [t for t in (b.flat.lam, *quiet) if t is not None]
        seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(seen.values()) + sum(s.numel() for s in self._xi_states.values())

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """tau over live noisy weights, T, effective temperature T_eff (SPEC 1) and the current C2.

        Pruned weights are left out of the tau statistics: their rho keeps drifting but means nothing.
        """
        noisy = [b for b in self._ensure_buckets() if b.rho is not None]
        first = noisy[0].group if noisy else self.param_groups[0]
        c2 = float(first["lr"])
        out = {"temperature": self.temperature, "c2": c2, "steps": float(self.steps)}
        taus = [t for t in (self._live_tau(b) for b in noisy) if t.numel()]
        if not taus:
            return out | {"tau_mean": math.nan, "tau_min": math.nan, "tau_max": math.nan, "t_eff": 0.0}
        tau_mean = sum(float(t.double().sum()) for t in taus) / sum(t.numel() for t in taus)
        beta1, beta2 = first["beta1"], first["beta2"]
        scale = (1 + beta1**2) / ((1 - beta1) * beta2)
        t_eff = scale * tau_mean * math.sqrt(c2) * self.temperature**2 * self.n_data
        return out | {
            "tau_mean": tau_mean,
            "tau_min": min(float(t.min()) for t in taus),
            "tau_max": max(float(t.max()) for t in taus),
            "t_eff": t_eff,
        }

    # ---------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/dicts/numbers only, so `torch.load(..., weights_only=True)` can read it back."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if s}
        sampler = {
            "n_data": self.n_data,
            "temperature": self.temperature,
            "seed": self.seed,
            "steps": self.steps,
            "xi_states": {k: v.clone() for k, v in self._xi_states.items()},
            "hash_steps": dict(self._hash_steps),
        }
        return {"state": state, "param_groups": groups, "sampler": sampler}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Exact resume: state, hyperparameters, extras/masks and the saved noise-generator states.

        Generator states are keyed by group, device kind and dtype, so any CUDA rank can resume a CUDA
        checkpoint; one saved on another kind (CPU vs CUDA) or dtype cannot be replayed, so that bucket
        starts a fresh stream and its next rho update has no xi_prev term. The fused step's stream is its
        step counter alone, so it resumes exactly on any rank; across the two paths streams start fresh.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups, strict=True)
        ):
            raise ValueError("saved optimizer state has a different parameter-group layout")
        params = [p for g in self.param_groups for p in g["params"]]
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
            _validate_group(group)
        new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for idx, saved in state_dict["state"].items():
            p = params[int(idx)]
            for name, value in saved.items():
                dtype = {"rho": self.rho_dtype or p.dtype, "xi": value.dtype}.get(name, p.dtype)
                new_state[p][name] = value.to(device=p.device, dtype=dtype, copy=True)
        self.state = new_state
        sampler = state_dict["sampler"]
        self.n_data = int(sampler["n_data"])
        self.temperature = float(sampler["temperature"])
        self.seed = int(sampler["seed"])
        self.steps = int(sampler["steps"])
        self._xi_states = {k: v.clone() for k, v in sampler["xi_states"].items()}
        self._hash_steps = {k: int(v) for k, v in sampler.get("hash_steps", {}).items()}
        self._buckets = None
        self._lay_out_fused()


def _add_(xs: list[Tensor], ys: list[Tensor], alpha: float, fe: bool) -> None:
    if fe:
        torch._foreach_add_(xs, ys, alpha=alpha)
    else:
        for x, y in zip(xs, ys, strict=True):
            x.add_(y, alpha=alpha)


def _mul_(xs: list[Tensor], ys: list[Tensor], fe: bool) -> None:
    if fe:
        torch._foreach_mul_(xs, ys)
    else:
        for x, y in zip(xs, ys, strict=True):
            x.mul_(y)


def _addcmul_(xs: list[Tensor], ys: list[Tensor], zs: list[Tensor], value: float, fe: bool) -> None:
    if fe:
        torch._foreach_addcmul_(xs, ys, zs, value=value)
    else:
        for x, y, z in zip(xs, ys, zs, strict=True):
            x.addcmul_(y, z, value=value)
