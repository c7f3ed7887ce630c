"""One-pass AdaptiveSGHMC update for a flat bucket, compiled by torch.compile, with a counter-based Gaussian.

The whole update of docs/algorithm.md#1-the-optimizer-adaptive-sghmc (rho, m, w) is one elementwise
function of (w, g, m, rho, lam, xi_prev, xi), so inductor turns it into one loop (C++ on CPU, Triton on CUDA)
that reads w, g, m, rho once and writes w, m, rho once. The noise is computed inside that loop rather than
drawn by a generator:

    a = mix(p ^ base);  h1 = mix(a ^ k1(t));  h2 = mix(a ^ k2(t))          (int32, mix = lowbias32)
    (X_p, Y_p) = Box-Muller(h1, h2),   xi_t = [X_0 .. X_{H-1}, Y_0 .. Y_{H-1}]

for pair index p < H = ceil(numel / 2): element p of the bucket takes X_p and element H + p takes Y_p, so one
Box-Muller evaluation (a log, a sqrt and short sin/cos polynomials) serves two elements. `base` is fixed per
bucket and (k1, k2) are fresh 32-bit keys per step counter t, both from blake2b of the bucket's seed, so a
step's noise is a function of (seed, t, index) alone. The step-independent first layer keeps two steps from
reusing each other's values at shifted indices, which a key mixed only into the input would allow.

xi_prev, which the rho update needs, either is recomputed from t - 1 (no stored xi: state m and rho only, a
second Box-Muller per pair) or is read from a stored copy of the last xi (fp16, bf16 or fp32: the injected
value is rounded to that dtype first, so the copy is exactly what was injected). On CPU the step is
compute-bound and the noise is most of its arithmetic, so storing is faster there; on a GPU it is memory-bound
and recomputing is the cheaper side (benchmarks/RESULTS.md).

tau for the weight update is taken to first order from the old tau, tau_new = tau + tau (1 - tau) drho
(clamped to [0, 1]), instead of a second sigmoid: that saves an exp and a division per element, and is within
a relative drho^2 / 2 of sigmoid(rho_new): 5e-11 at the recipes' per-step |drho| ~ 1e-5 (eta / (tau N) plus
a data term of the same order), far under float32 rounding, and a few ulp at 1e-3. rho itself is updated
exactly and tau_old is its exact sigmoid, so the approximation never accumulates.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)  # the second lowbias32 multiplier as a signed int32
_PI_4 = math.pi / 4

Halves = tuple[Tensor, Tensor]


def padded_numel(numel: int) -> int:
    """Flat buffers hold an even number of elements, so that they split into the two halves of the pairs."""
    return numel + numel % 2


def _mix(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons): a 32-bit bijection with low avalanche bias; masks make the shifts logical."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 16) & 0xFFFF)


def normal_pair(index: Tensor, base: int, k1: int, k2: int) -> Halves:
    """Two independent N(0, 1) float32 values per int32 `index` (Box-Muller).

    23 bits give the radius (|value| <= 5.8), 24 bits an angle in [0, pi/4) and 3 bits which of the eight
    symmetric copies of that octant it lies in, so sin and cos need only short polynomials (cephes sinf/cosf,
    error ~1e-7) on [0, pi/4] instead of a full range reduction.
    """
    a = _mix(index ^ base)
    h1 = _mix(a ^ k1)
    h2 = _mix(a ^ k2)
    u = (((h1 >> 9) & 0x7FFFFF).to(torch.float32) + 0.5) * 2.0**-23
    r = torch.sqrt(-2.0 * torch.log(u))
    x = ((h2 >> 8) & 0xFFFFFF).to(torch.float32) * (_PI_4 * 2.0**-24)
    z = x * x
    sin = x + x * z * ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1)
    cos = 1.0 - 0.5 * z + z * z * ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2)
    swap = (h1 & 1) != 0
    rx = (1 - (h1 & 2)).to(torch.float32) * r  # bit 1: sign of X
    ry = (1 - ((h1 >> 1) & 2)).to(torch.float32) * r  # bit 2: sign of Y
    return rx * torch.where(swap, sin, cos), ry * torch.where(swap, cos, sin)


def _key_words(seed: int, counter: int) -> tuple[int, int]:
    digest = hashlib.blake2b(
        counter.to_bytes(8, "little", signed=True), key=seed.to_bytes(8, "little"), digest_size=8
    ).digest()
    k1, k2 = struct.unpack("<ii", digest)
    return k1, k2


def base_key(seed: int) -> int:
    """The per-bucket key of the step-independent first hash layer."""
    return _key_words(seed, -1)[0]


def step_keys(seed: int, counter: int) -> tuple[int, int]:
    """The two 32-bit keys of step `counter` (>= 0) of the bucket seeded with `seed`."""
    if counter < 0:
        raise ValueError(f"step counter must be >= 0, got {counter}")
    return _key_words(seed, counter)


@torch.no_grad()
def noise(seed: int, counter: int, numel: int, device: torch.device | str = "cpu") -> Tensor:
    """xi of step `counter` for a bucket of `numel` elements, as the fused kernel injects it (float32)."""
    half = padded_numel(numel) // 2
    index = torch.arange(half, dtype=torch.int32, device=device)
    return torch.cat(normal_pair(index, base_key(seed), *step_keys(seed, counter)))[:numel]


def _update(
    w: Halves,
    g: Halves,
    m: Halves,
    rho: Halves,
    lam: Halves | None,
    xs: Halves | None,
    base: int,
    k1: int,
    k2: int,
    q1: int,
    q2: int,
    wd: float,
    prior: float,
    data: float,
    entropy: float,
    beta1: float,
    step: float,
    noise_scale: float,
    look: float,
    drift: float,
) -> None:
    """The update (docs/algorithm.md#1-the-optimizer-adaptive-sghmc) on the two halves of a bucket; xi from
    keys (k1, k2), xi_prev from `xs` or else from (q1, q2).

    rho' = rho - (prior lam tau + data xi_prev g - entropy / tau);   tau = sigmoid(rho), 1/tau = 1 + exp(-rho)
    d = noise_scale xi - step (g + lam w);   m <- beta1 m + d;   w <- w + tau' (look m + drift d)
    tau' = tau + tau (1 - tau) (rho' - rho), clamped to [0, 1] (see the module docstring). lam is the
    per-element decay, or the scalar wd when None; (look, drift) = (1, 0) is the paper's step, (beta1, 1)
    the Nesterov one. A stored `xs` is read as xi_prev and overwritten with this step's (rounded) xi.
    """
    index = torch.arange(w[0].shape[0], dtype=torch.int32, device=w[0].device)
    xi = normal_pair(index, base, k1, k2)
    compute = torch.promote_types(w[0].dtype, torch.float32)
    if xs is None:
        xi_prev = normal_pair(index, base, q1, q2)
    else:
        xi_prev = (xs[0].to(compute), xs[1].to(compute))
        rounded = (xi[0].to(xs[0].dtype), xi[1].to(xs[1].dtype))
        xi = (rounded[0].to(compute), rounded[1].to(compute))
    for i in range(2):
        decay = wd if lam is None else lam[i].to(compute)
        wi, gi, mi, ri = (t[i].to(compute) for t in (w, g, m, rho))
        e = torch.exp(-ri)
        tau = 1.0 / (1.0 + e)
        r_new = ri - (prior * decay * tau + data * xi_prev[i] * gi - entropy * (1.0 + e))
        d = noise_scale * xi[i] - step * (gi + decay * wi)
        m_new = beta1 * mi + d
        tau_new = (tau + tau * (1.0 - tau) * (r_new - ri)).clamp(0.0, 1.0)
        w[i].copy_(wi + tau_new * (look * m_new + drift * d))
        m[i].copy_(m_new)
        rho[i].copy_(r_new)
        if xs is not None:
            xs[i].copy_(rounded[i])


_compiled: Callable[..., None] | None = None
_variants: dict[tuple[Any, ...], bool] = {}
_warned: set[tuple[str, torch.dtype]] = set()  # one warning per device kind and dtype, not per variant
compile_seconds: dict[tuple[Any, ...], float] = {}  # per variant, for benchmarks and logs


def _kernel() -> Callable[..., None]:
    global _compiled
    if _compiled is None:
        # Keep the fp16/bf16 rounding of a stored xi inside the loop (inductor elides a down-and-up cast by
        # default), so that the injected xi is exactly the stored one that the next step reads back.
        _compiled = torch.compile(
            _update, dynamic=True, fullgraph=True, options={"emulate_precision_casts": True}
        )
    return _compiled


def available(
    device: torch.device, dtype: torch.dtype, rho_dtype: torch.dtype, lam: bool, xi_dtype: torch.dtype | None
) -> bool:
    """Whether the fused step runs for this variant (xi_dtype: the stored xi's, None to recompute xi_prev);
    compiles it on first use, in this process only once.

    The first use is a probe on dummy tensors, so a missing compiler or a failed compile costs one warning
    and the multi-tensor step, never a half-applied update.
    """
    variant = (device.type, dtype, rho_dtype, lam, xi_dtype)
    if variant not in _variants:
        start = time.perf_counter()
        try:
            # Laid out as real buckets are (halves of flat buffers), so that the graph's guards accept them.
            w, g, m = (_halves(torch.zeros(8, device=device, dtype=dtype)) for _ in range(3))
            rho = _halves(torch.zeros(8, device=device, dtype=rho_dtype))
            decay = _halves(torch.zeros(8, device=device, dtype=dtype)) if lam else None
            xs = _halves(torch.zeros(8, device=device, dtype=xi_dtype)) if xi_dtype is not None else None
            with torch.no_grad():
                # Not 0 or 1, which torch.compile would specialise on: the real calls must reuse this graph.
                _kernel()(w, g, m, rho, decay, xs, 2, 3, 4, 5, 6, *(0.5,) * 9)
            _variants[variant] = True
            compile_seconds[variant] = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - whatever stops the compile, the multi-tensor step remains
            _variants[variant] = False
            if (device.type, dtype) in _warned:
                return False
            _warned.add((device.type, dtype))
            first_line = (str(exc).strip().splitlines() or [""])[0]
            warnings.warn(
                f"fused AdaptiveSGHMC step unavailable on {device.type} for {dtype} "
                f"({type(exc).__name__}: {first_line}); using the multi-tensor step",
                RuntimeWarning,
                stacklevel=2,
            )
    return _variants[variant]


def layout_problem(params: list[Tensor], ours: set[int]) -> str | None:
    """Why these params (one device and dtype) cannot become views of one flat buffer, or None if they can.

    Each must own its storage exactly, so that no other tensor silently stops aliasing it, or live in one of
    `ours` (the data pointers of this optimizer's current flat buffers); and be dense in some order of its
    dims (contiguous, channels_last, ...), which its view of the flat buffer keeps (`layout_views`).
    """
    first = params[0]
    numel = sum(p.numel() for p in params)
    if first.device.type not in ("cpu", "cuda"):
        return f"device {first.device.type} (cpu and cuda only)"
    if not first.dtype.is_floating_point:
        return f"dtype {first.dtype}"
    if not 4 <= numel < 2**32:
        return f"{numel} elements (4 to 2^32 - 1 only)"
    if any(memory_order(p) is None for p in params):
        return "a parameter that is not dense in memory (overlapping or strided)"
    seen: set[int] = set()
    for p in params:
        storage = p.untyped_storage()
        if storage.data_ptr() in ours:
            continue
        if storage.data_ptr() in seen or p.storage_offset() or storage.nbytes() != p.numel() * p.element_size():
            return "parameters that share storage with each other or with other tensors"
        seen.add(storage.data_ptr())
    return None


def memory_order(t: Tensor) -> tuple[int, ...] | None:
    """The order of dims in which `t` is laid out densely (identity when contiguous, (0, 2, 3, 1) for a
    channels_last conv weight), or None when no order is (overlapping or strided memory)."""
    if t.is_contiguous():
        return tuple(range(t.dim()))
    order = tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    return order if t.permute(order).is_contiguous() else None


def layout_views(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    """Consecutive views of `flat`, one per param, each with that param's shape and memory layout, so that
    element k of a param's memory is element offset + k of `flat` for the param, its state and its gradient
    alike. All contiguous: the one C++ call `_unflatten_dense_tensors`."""
    orders = [memory_order(p) for p in params]
    if all(order == tuple(range(p.dim())) for order, p in zip(orders, params, strict=True)):
        return list(_unflatten_dense_tensors(flat[: sum(p.numel() for p in params)], params))
    views, offset = [], 0
    for p, order in zip(params, orders, strict=True):
        assert order is not None, "layout_problem() rules out params that are not dense"
        chunk = flat[offset : offset + p.numel()].view([p.shape[d] for d in order])
        views.append(chunk.permute(sorted(range(p.dim()), key=order.__getitem__)))
        offset += p.numel()
    return views


def _halves(flat: Tensor) -> Halves:
    first, second = flat.view(2, -1).unbind(0)
    return first, second


class FlatBucket:
    """One bucket laid out for the fused kernel: params are views into one flat buffer, as are m and rho.

    Buffers have padded_numel(numel) elements; the padding element is updated like any other and never read.
    A bucket without noise passes a zero rho and zero noise/preconditioner coefficients, which leaves rho at
    exactly 0 (tau = 0.5) and m, w on the plain momentum update, with no second compiled variant. `xi`, when
    given, is the flat stored copy of the last injected xi (same length; zero before the first step).
    """

    def __init__(
        self, params: list[Tensor], momentum: Tensor, rho: Tensor, seed: int, xi: Tensor | None = None
    ) -> None:
        self.params = params
        self.numel = sum(p.numel() for p in params)
        self.weights = _adopt(params, momentum.numel())
        self.seed = seed
        self.base = base_key(seed)
        self.rho = rho
        self.pad = torch.zeros(momentum.numel() - self.numel, device=momentum.device, dtype=momentum.dtype)
        self.ptrs = [p.data_ptr() for p in params]
        # Gradients are flattened in each param's memory order (a permuted view of a channels_last grad).
        self.orders = [(i, order) for i, p in enumerate(params) if (order := memory_order(p)) != tuple(range(p.dim()))]
        self.lam: Tensor | None = None
        self.xi = xi
        self._w, self._m, self._rho = _halves(self.weights), _halves(momentum), _halves(rho)
        self._xi = _halves(xi) if xi is not None else None
        self._lam: Halves | None = None

    def intact(self) -> bool:
        """False once someone has replaced a param's storage (p.data = ...): the layout must be rebuilt."""
        return [p.data_ptr() for p in self.params] == self.ptrs

    def set_decay(self, wd: float, extras: list[tuple[int, Tensor]]) -> None:
        """Per-element decay wd + extra as one flat buffer while any extra decay is set, else the scalar wd."""
        if not extras:
            self.lam, self._lam = None, None
            return
        lam = torch.full_like(self.weights, wd)
        views = layout_views(lam, self.params)
        for i, extra in extras:
            views[i].add_(extra)
        self.lam, self._lam = lam, _halves(lam)

    def step(
        self,
        grads: list[Tensor],
        counter: int,
        prev: int | None,
        *,
        wd: float,
        prior: float,
        data: float,
        entropy: float,
        beta1: float,
        step: float,
        noise_scale: float,
        look: float,
        drift: float,
    ) -> None:
        """One update with xi of step `counter`; xi_prev of step `prev`, or the stored xi when there is one
        (None: no previous draw, no term)."""
        if self.orders:
            grads = list(grads)
            for i, order in self.orders:
                grads[i] = grads[i].permute(order)
        flat = _flatten_dense_tensors([*grads, self.pad] if self.pad.numel() else grads)
        keys = step_keys(self.seed, counter)
        prev_keys = keys if prev is None else step_keys(self.seed, prev)
        _kernel()(
            self._w, _halves(flat), self._m, self._rho, self._lam, self._xi, self.base, *keys, *prev_keys, wd,
            prior, 0.0 if prev is None else data, entropy, beta1, step, noise_scale, look, drift,
        )


def _adopt(params: list[Tensor], size: int) -> Tensor:
    """The flat buffer (of `size` elements) that the params are views of, copying them into a new one if needed.

    Params that already are consecutive views of one storage of exactly that size (a bucket rebuilt after
    load_state_dict or add_param_group) keep it, so their storage, and anything compiled against it, stays.
    """
    existing = _existing_flat(params, size)
    if existing is not None:
        return existing
    first = params[0]
    flat = torch.zeros(size, device=first.device, dtype=first.dtype)
    views = layout_views(flat, params)
    for p, view in zip(params, views, strict=True):
        view.copy_(p.detach())
        p.data = view
    return flat


def _existing_flat(params: list[Tensor], size: int) -> Tensor | None:
    """The buffer of `size` elements whose consecutive views the params are, if they are."""
    first = params[0]
    storage = first.untyped_storage()
    offset = 0
    for p in params:
        if p.untyped_storage().data_ptr() != storage.data_ptr() or p.storage_offset() != offset:
            return None
        offset += p.numel()
    if storage.nbytes() != size * first.element_size():
        return None
    return torch.empty(0, device=first.device, dtype=first.dtype).set_(storage, 0, (size,))
