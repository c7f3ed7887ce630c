"""Adaptive variational-Bayes optimizer: preconditioned SGHMC with a mirror-descent preconditioner
(docs/algorithm.md#1-the-optimizer-adaptive-sghmc).

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
that touch only state run as one kernel per bucket and only four multi-tensor (foreach) ops touch w and g
(the layout: compressor.bayes.buckets; that step: compressor.bayes.multitensor).
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

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from compressor.bayes import fused as fused_kernel
from compressor.bayes.buckets import XI_DTYPES, Layout, _Bucket, _mul_, _validate_group, _views, refresh_hooks
from compressor.bayes.multitensor import step_bucket
from compressor.bayes.temperature import resolve_temperature

XiStorage = Literal["auto", "regenerate", "fp16", "bf16", "fp32"]
Fused = bool | Literal["auto"]


class AdaptiveSGHMC(torch.optim.Optimizer):
    """Preconditioned SGHMC of docs/algorithm.md#1-the-optimizer-adaptive-sghmc, for gradients of the mean
    loss over `n_data` examples.

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
    a ResNet-20 run at N = 50,000).

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
    it from the hash elsewhere (8 B/param, m and rho only). True uses it wherever it compiles; "auto" on
    CUDA only (on CPU it saves ~1 ms per ResNet-20 step against a one-off compile of tens of seconds, see
    benchmarks/RESULTS.md); False (the default until the CUDA path has been run on a GPU: it is only tested
    on CPU) never. Buckets it cannot take (params not dense in memory, storage-sharing params, fewer than 4
    elements, a failed compile: one warning) use the multi-tensor step. The fused noise
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
        if xi_storage not in ("auto", "regenerate", *XI_DTYPES):
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
            layout = Layout(self.state, self.seed, self.fused, self.rho_dtype, self.xi_storage)
            self._buckets = [
                b for gi, group in enumerate(self.param_groups) for b in layout.buckets(gi, group, ours)
            ]
            self._built = self._buckets
            self._hooks_dirty = True
        if self._hooks_dirty:
            for b in self._buckets:
                refresh_hooks(b, self.state)
            self._hooks_dirty = False
        return self._buckets

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
                step_bucket(
                    bucket, grads, temp=self.temperature, n_data=self.n_data, fe=self.foreach,
                    xi_states=self._xi_states,
                )
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
        """tau over live noisy weights, T, effective temperature T_eff (module docstring) and the current C2.

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

