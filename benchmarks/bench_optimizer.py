"""AdaptiveSGHMC step time and state memory against torch.optim.SGD(momentum=0.9, foreach=True).

Same process, same parameter shapes (from compressor.models), interleaved repeats; prints ratios to SGD of
the median wall-clock time per step and of the median process CPU time per step. On a shared, loaded CPU
the wall clock is stretched by time-slicing (every call longer than a scheduler slice alike, which pulls
ratios towards 1); with one intra-op thread the CPU time is the work itself. With more threads CPU time
also counts OpenMP spin-waits, so read the wall ratio there.

Variants: the fused one-pass step (`fused=True`: one torch.compile'd kernel per bucket, counter-based noise;
xi_prev stored by the device's default, fp32 on CPU, or recomputed, or stored in fp16), classical and
Nesterov, with the engine's two groups (BatchNorm/bias without noise) and with an extra decay on every weight
(as the E-step sets it); the multi-tensor step, by how xi_prev reaches the rho update
(`xi_storage`: regenerated with a second draw, or stored in fp16/bf16/fp32), with eta = 0 (no rho update)
and with bf16 rho. Also times one Gaussian draw over all parameters (torch's mt19937 + Box-Muller).
`--inductor-randn` adds a torch.compile'd `randn_like` (Philox in the generated C++ loop) for comparison.
Several `--threads` values run one process each: inductor fixes a kernel's parallelism when it compiles it.

    python benchmarks/bench_optimizer.py [--device cuda] [--threads 1 2] [--repeats 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from compressor.bayes import AdaptiveSGHMC, fused
from compressor.methods import param_groups
from compressor.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clone_params(model: torch.nn.Module, device: torch.device, seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for p in model.parameters():
        q = torch.nn.Parameter(p.detach().clone().to(device))
        q.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
        params.append(q)
    return params


def _time_steps(fn: Callable[[], object], steps: int, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per call, averaged over `steps` calls."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    if isinstance(opt, AdaptiveSGHMC):
        return opt.state_nbytes()
    return sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
    )


def _optimizers(model: torch.nn.Module, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    def sghmc(engine_groups: bool = False, extra_decay: bool = False, **kw: object) -> AdaptiveSGHMC:
        params = _clone_params(model, device, 0)
        groups: list[dict[str, object]] = [{"params": params}]
        if engine_groups:  # as compressor.methods.avb builds them: no prior or noise on BatchNorm/bias
            by_id = {id(p): q for p, q in zip(model.parameters(), params, strict=True)}
            groups = param_groups(model, decay_bn=False, decayed={}, exempt={"weight_decay": 0.0, "noise": False})
            for group in groups:
                group["params"] = [by_id[id(p)] for p in group["params"]]
        opt = AdaptiveSGHMC(groups, n_data=50_000, lr=0.1, **kw)  # type: ignore[arg-type]
        if extra_decay:  # the E-step's per-channel decay on every weight of the first group
            for p in groups[0]["params"]:  # type: ignore[union-attr]
                opt.set_extra_decay(p, torch.full((p.shape[0],) + (1,) * (p.dim() - 1), 0.01, device=device))
        return opt

    return {
        "sgd": torch.optim.SGD(
            _clone_params(model, device, 0), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True
        ),
        "fused": sghmc(fused=True),
        "fused nesterov": sghmc(fused=True, nesterov=True),
        "fused, 2 groups": sghmc(engine_groups=True, fused=True),
        "fused + extra decay": sghmc(extra_decay=True, fused=True),
        "fused, xi regenerate": sghmc(fused=True, xi_storage="regenerate"),
        "fused, xi fp16": sghmc(fused=True, xi_storage="fp16"),
        "xi regenerate": sghmc(xi_storage="regenerate", fused=False),
        "xi fp16": sghmc(xi_storage="fp16", fused=False),
        "xi fp16, 2 groups": sghmc(engine_groups=True, xi_storage="fp16", fused=False),
        "xi bf16": sghmc(xi_storage="bf16", fused=False),
        "xi fp32": sghmc(xi_storage="fp32", fused=False),
        "eta0 regenerate": sghmc(eta=0.0, xi_storage="regenerate", fused=False),
        "eta0 xi fp16": sghmc(eta=0.0, xi_storage="fp16", fused=False),
        "bf16 rho, xi fp16": sghmc(rho_dtype=torch.bfloat16, xi_storage="fp16", fused=False),
    }


def bench(model_name: str, device: torch.device, repeats: int, steps: int, inductor_randn: bool) -> None:
    model = create_model(model_name, num_classes=10, input_shape=(3, 32, 32))
    numel = sum(p.numel() for p in model.parameters())
    n_tensors = len(list(model.parameters()))
    start = time.perf_counter()
    opts = _optimizers(model, device)
    setup = time.perf_counter() - start
    assert all(opt.fused_active for name, opt in opts.items() if name.startswith("fused"))
    noise = torch.empty(numel, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    bench_fns: dict[str, Callable[[], object]] = {name: opt.step for name, opt in opts.items()}
    bench_fns["one normal_ draw"] = lambda: noise.normal_(generator=gen)
    if inductor_randn:
        compiled = torch.compile(torch.randn_like, dynamic=False)
        bench_fns["inductor randn"] = lambda: compiled(noise)
    for fn in bench_fns.values():  # warm-up: allocates state, compiles, settles allocator and caches
        _time_steps(fn, 3, device)
    walls: dict[str, list[float]] = {name: [] for name in bench_fns}
    cpus: dict[str, list[float]] = {name: [] for name in bench_fns}
    for _ in range(repeats):
        for name, fn in bench_fns.items():
            wall, cpu = _time_steps(fn, steps, device)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall_med = {name: statistics.median(ts) for name, ts in walls.items()}
    cpu_med = {name: statistics.median(ts) for name, ts in cpus.items()}
    print(f"\n{model_name}: {numel:,} parameters in {n_tensors} tensors, device {device}")
    print(f"  {'median per step':20s} {'wall':>9s} {'ratio':>6s}   {'CPU':>9s} {'ratio':>6s}")
    for name in bench_fns:
        print(
            f"  {name:20s} {wall_med[name] * 1e6:7.0f}us {wall_med[name] / wall_med['sgd']:5.2f}x"
            f"   {cpu_med[name] * 1e6:7.0f}us {cpu_med[name] / cpu_med['sgd']:5.2f}x"
        )
    for name, opt in opts.items():
        nbytes = _state_bytes(opt)
        print(f"  {name:20s} state {nbytes / 2**20:7.2f} MiB = {nbytes / numel:5.2f} B/param")
    compiles = ", ".join(
        f"{'per-element decay' if variant[3] else 'scalar decay'}, xi {str(variant[4]).removeprefix('torch.')}"
        f" {seconds:.1f}s"
        for variant, seconds in fused.compile_seconds.items()
    )
    print(f"  optimizer setup {setup:.1f}s; fused kernel compiles in this process (once each): {compiles}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--inductor-randn", action="store_true", help="also time a compiled randn_like")
    args = parser.parse_args()
    if args.threads and len(args.threads) > 1:
        argv = ["--device", args.device, "--repeats", str(args.repeats), "--steps", str(args.steps)]
        argv += ["--models", *args.models, *(["--inductor-randn"] if args.inductor_randn else [])]
        for threads in args.threads:
            subprocess.run([sys.executable, __file__, *argv, "--threads", str(threads)], check=True)
        return
    if args.threads:
        torch.set_num_threads(args.threads[0])
    device = torch.device(args.device)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average (1/5/15 min) {load}")
    for name in args.models:
        bench(name, device, args.repeats, args.steps, args.inductor_randn)
    print(f"load average at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
