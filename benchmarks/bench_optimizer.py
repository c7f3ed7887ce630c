"""AdaptiveSGHMC step time and state memory against torch.optim.SGD(momentum=0.9, foreach=True).

Same process, same parameter shapes (from compressor.models), interleaved repeats, medians; prints ratios.
Also prints the time of one Gaussian draw over all parameters: on CPU torch's generator (mt19937 +
Box-Muller) costs more than a whole SGD step, and the sampler needs two draws per step (xi_t and the
regenerated xi_{t-1}; one with eta = 0, where rho is frozen), so that draw, not memory traffic, bounds
the CPU ratio. Variants: fp32 rho (default), eta = 0, bf16 rho.

    python benchmarks/bench_optimizer.py [--device cuda] [--threads 1] [--repeats 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from compressor.bayes import AdaptiveSGHMC
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


def _time_steps(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    if isinstance(opt, AdaptiveSGHMC):
        return opt.state_nbytes()
    return sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
    )


def bench(model_name: str, device: torch.device, repeats: int, steps: int) -> None:
    model = create_model(model_name, num_classes=10, input_shape=(3, 32, 32))
    numel = sum(p.numel() for p in model.parameters())
    n_tensors = len(list(model.parameters()))
    opts: dict[str, torch.optim.Optimizer] = {
        "sgd": torch.optim.SGD(
            _clone_params(model, device, 0), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True
        ),
        "sghmc": AdaptiveSGHMC(_clone_params(model, device, 0), n_data=50_000, lr=0.1, temperature="1/N"),
        "sghmc_eta0": AdaptiveSGHMC(_clone_params(model, device, 0), n_data=50_000, lr=0.1, eta=0.0),
        "sghmc_bf16rho": AdaptiveSGHMC(
            _clone_params(model, device, 0),
            n_data=50_000,
            lr=0.1,
            temperature="1/N",
            rho_dtype=torch.bfloat16,
        ),
    }
    noise = torch.empty(numel, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    bench_fns: dict[str, Callable[[], object]] = {name: opt.step for name, opt in opts.items()}
    bench_fns["one_normal_draw"] = lambda: noise.normal_(generator=gen)
    for fn in bench_fns.values():  # warm-up: allocates state, settles allocator and caches
        _time_steps(fn, 3, device)
    times: dict[str, list[float]] = {name: [] for name in bench_fns}
    for _ in range(repeats):
        for name, fn in bench_fns.items():
            times[name].append(_time_steps(fn, steps, device))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"\n{model_name}: {numel:,} parameters in {n_tensors} tensors, device {device}")
    for name in bench_fns:
        ratio = med[name] / med["sgd"]
        print(f"  {name:15s} {med[name] * 1e6:9.1f} us/step   x{ratio:5.2f} SGD")
    for name, opt in opts.items():
        nbytes = _state_bytes(opt)
        print(f"  {name:15s} state {nbytes / 2**20:7.2f} MiB = {nbytes / numel:5.2f} B/param")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.models:
        bench(name, device, args.repeats, args.steps)


if __name__ == "__main__":
    main()
