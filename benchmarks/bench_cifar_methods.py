"""End-to-end: ResNet-20 on the CIFAR-10 train split (JPEG ImageFolder), dense sgd vs dense avb vs emmcmc
with a 50 % MAC target, same data, epochs, batch and seed. Prints a markdown table and writes JSON.

    python benchmarks/bench_cifar_methods.py --root ../shared/data/cifar10/train --limit 10000 --val-limit 2000 \
        --epochs 15 --out runs/bench-methods
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compressor.engine.trainer import run
from compressor.recipe import validate_recipe


def recipes(args: argparse.Namespace) -> dict[str, dict]:
    data = {"name": "imagefolder", "root": args.root, "image_size": 32, "val_split": 0.1,
            "limit": args.limit, "val_limit": args.val_limit}
    train = {"epochs": args.epochs, "batch_size": 128, "seed": args.seed}
    bayes = {"lr": 0.1, "beta1": 0.9, "temperature": "1/N", "weight_decay": 5e-4, "schedule": "cyclical",
             "cycles": 1, "samples_per_cycle": 3}
    start, target_epoch = max(1, round(0.2 * args.epochs)), max(2, round(0.6 * args.epochs))
    methods = {
        "sgd": {"method": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}},
        "avb": {"method": {"name": "avb", **bayes}},
        "emmcmc": {"method": {"name": "emmcmc", **bayes, "lambda0": 0.05, "warmup_epochs": start},
                   "prune": {"target": 0.5, "target_kind": "macs", "start_epoch": start,
                             "target_epoch": target_epoch}},
    }
    return {name: {"name": f"bench-{name}", "model": {"name": "resnet20"}, "data": data, "train": train, **spec}
            for name, spec in methods.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--val-limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="sgd,avb,emmcmc")
    parser.add_argument("--out", default="runs/bench-methods")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    all_recipes = recipes(args)
    for name in args.methods.split(","):
        recipe = validate_recipe(all_recipes[name])
        t0 = time.perf_counter()
        run_dir = run(recipe, out_dir=args.out)
        s = json.loads((run_dir / "summary.json").read_text())
        row = {"method": name, "accuracy": s["accuracy"], "nll": s["nll"], "ece": s["ece"], "brier": s["brier"],
               "macs": s["macs"], "macs_dense": s["macs_dense"], "params_shrunk": s["params_shrunk"],
               "channel_sparsity": s["channel_sparsity"], "wall_seconds": time.perf_counter() - t0,
               "images_per_second": s["train_images_per_second"], "bma": s.get("bma"), "run_dir": str(run_dir)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))
    print("| method | acc % | NLL | ECE | Brier | BMA acc % | BMA NLL | BMA ECE | MACs (M) | MAC reduction | img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["bma"] or {}
        bma = (f"{100 * b['accuracy']:.1f} | {b['nll']:.3f} | {b['ece']:.3f}" if b else "– | – | –")
        print(f"| {r['method']} | {100 * r['accuracy']:.1f} | {r['nll']:.3f} | {r['ece']:.3f} | {r['brier']:.3f} | "
              f"{bma} | {r['macs'] / 1e6:.1f} | {r['macs_dense'] / r['macs']:.2f}x | {r['images_per_second']:.0f} |")


if __name__ == "__main__":
    main()
