"""How AdaptiveSGHMC lays its state out: params are grouped into buckets, one per (group, device, dtype).

The momentum m, rho and a stored xi of a bucket are one flat buffer each, and each param's state entries
are views into them, so the parts of the update that touch only state run as one kernel per bucket. A bucket
that takes the fused step (compressor.bayes.fused) also makes the params views of one flat buffer. Each
noisy bucket owns a generator seeded from (seed, key); the key names the group, the device *kind* and the
dtype, so every data-parallel rank draws the same noise and a checkpoint's generator states fit every rank.
Also here: the multi-tensor (foreach) helpers that both steps share and the checks of a param group.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors

from compressor.bayes import fused as fused_kernel

XI_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


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


# ---------------------------------------------------------------- multi-tensor ops (fe False: a loop)


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


# ---------------------------------------------------------------- laying params out into buckets


@dataclass(frozen=True)
class Layout:
    """The optimizer's settings that decide its buckets, read from it at each rebuild.

    `state` is the optimizer's per-param state: existing (or just loaded) entries move into the flat buffers,
    and the entries become views of them.
    """

    state: dict[Tensor, dict[str, Any]]
    seed: int
    fused: bool | str
    rho_dtype: torch.dtype | None
    xi_storage: str

    def buckets(self, gi: int, group: dict[str, Any], ours: set[int]) -> list[_Bucket]:
        """The buckets of param group `gi`; `ours` holds the storages of the flat buffers laid out before."""
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
            buckets.append(self._bucket(key, group, device, dtype, params, ours))
        return buckets

    def _bucket(
        self, key: str, group: dict[str, Any], device: torch.device, dtype: torch.dtype, params: list[Tensor],
        ours: set[int],
    ) -> _Bucket:
        """One bucket: its flat state (padded when fused), its generator, and the params' state moved in."""
        numel = sum(p.numel() for p in params)
        fuse = self._fusable(device, dtype, params, ours, self.xi_dtype(device, fused=True))
        xi_dtype = self.xi_dtype(device, fused=fuse)
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
        view = fused_kernel.layout_views if fuse else _views  # fused: element order is the params' memory's
        m_views, rho_views, xi_views = self._adopt_state(
            params, {"momentum_buffer": momentum, "rho": rho, "xi": xi}, view
        )
        bucket = _Bucket(key, group, params, momentum, m_views, rho, rho_views, generator, xi, xi_views)
        if fuse:
            assert rho_full is not None  # for a group without noise: zeros that keep tau at 0.5 (and no xi)
            seed = _bucket_seed(self.seed, key)
            bucket.flat = fused_kernel.FlatBucket(params, momentum_full, rho_full, seed, xi_full)
        return bucket

    def _adopt_state(
        self, params: list[Tensor], flats: dict[str, Tensor | None], view: Callable[..., list[Tensor]]
    ) -> list[list[Tensor]]:
        """Make each param's state entries views of the flat buffers (dropping those a bucket has not)."""
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
        return list(views.values())

    def _fusable(
        self, device: torch.device, dtype: torch.dtype, params: list[Tensor], ours: set[int],
        xi_dtype: torch.dtype | None,
    ) -> bool:
        """Whether a bucket of these params takes the fused step (see AdaptiveSGHMC's docstring); `ours` holds
        the storages of the flat buffers laid out before, whose views may be laid out again."""
        if self.fused is False or (self.fused == "auto" and device.type != "cuda"):
            return False
        problem = fused_kernel.layout_problem(params, ours)
        if problem is not None:
            if self.fused is True:
                # Attributed to AdaptiveSGHMC._ensure_buckets (3.11 counts its list comprehension as a frame).
                warnings.warn(f"fused AdaptiveSGHMC step not used for {len(params)} parameter(s): {problem}",
                              RuntimeWarning, stacklevel=5)
            return False
        return fused_kernel.available(device, dtype, self.rho_dtype or dtype, False, xi_dtype)

    def xi_dtype(self, device: torch.device, fused: bool) -> torch.dtype | None:
        """Storage dtype of xi for a bucket on `device` (fused or not); None: regenerate xi_prev instead."""
        if self.xi_storage == "auto":
            if device.type != "cpu":
                return None
            return torch.float32 if fused else torch.float16
        return XI_DTYPES.get(self.xi_storage)


def refresh_hooks(b: _Bucket, state: dict[Tensor, dict[str, Any]]) -> None:
    """Collect the bucket's extra decays and keep masks from `state`; a fused bucket takes the new decay, or
    falls back to the multi-tensor step when its variant with per-element decay does not compile."""
    b.extras = [(i, state[p]["extra_decay"]) for i, p in enumerate(b.params) if "extra_decay" in state[p]]
    b.masks = [(i, state[p]["keep"]) for i, p in enumerate(b.params) if "keep" in state[p]]
    if b.flat is not None:
        w = b.params[0]
        xi_dtype = b.flat.xi.dtype if b.flat.xi is not None else None
        rho_dtype = b.flat.rho.dtype
        if b.extras and not fused_kernel.available(w.device, w.dtype, rho_dtype, True, xi_dtype):
            b.flat = None
        else:
            b.flat.set_decay(b.group["weight_decay"], b.extras)
