"""Training throughput of the engine (headless `compressor train`, sgd) vs a hand-written PyTorch loop.

Same model, data (CIFAR-format pickles written to a temp dir), batch size and optimizer, same process,
interleaved repeats; prints images/s of both and their ratio (target >= 0.95).

    python benchmarks/bench_throughput.py --images 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from compressor.engine.session import build_session
from compressor.engine.trainer import run
from compressor.recipe import validate_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import write_cifar10  # the tests' on-disk CIFAR writer


def plain_loop(session, epochs: int) -> float:
    """The reference: what a user would write by hand around the same model and dataset."""
    model, data = session.model, session.data
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True)
    loader = DataLoader(data.train, batch_size=128, shuffle=True, drop_last=True)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += y.shape[0]
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet20")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar10(Path(tmp) / "cifar", n_train=args.images, n_test=256)
        recipe = validate_recipe({
            "model": {"name": args.model}, "data": {"name": "cifar10", "root": str(root)},
            "method": {"name": "sgd", "lr": 0.05}, "eval": {"batch_size": 256},
            "train": {"epochs": args.epochs, "batch_size": 128, "log_every": 20},
        })
        ours, ref = [], []
        for _ in range(args.repeats):
            ref.append(plain_loop(build_session(recipe, torch.device("cpu")), args.epochs))
            run_dir = run(recipe, out_dir=Path(tmp) / "runs")
            ours.append(json.loads((run_dir / "summary.json").read_text())["train_images_per_second"])
            print(f"plain {ref[-1]:.1f} img/s   compressor {ours[-1]:.1f} img/s", flush=True)
        ratios = [o / r for o, r in zip(ours, ref, strict=True)]
        print(f"median: plain {statistics.median(ref):.1f} img/s, compressor {statistics.median(ours):.1f} img/s, "
              f"ratio {statistics.median(ratios):.3f} (per repeat: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
