"""All methods under one CPU-sized budget: ResNet-20 on the CIFAR-10 train split (JPEG ImageFolder, 10 % =
5,000 images held out for evaluation, 10,000 of the rest trained on), a 50 % MAC target (weights for the
unstructured schemes), the same 15 epochs, split and seed for everyone. `--methods sgd,avb,emmcmc` is the
end-to-end benchmark of the Bayesian engine (dense sgd vs dense avb vs emmcmc).
Prints the leaderboard and, for each structured peer, emmcmc's accuracy and ECE differences at (nearly) the
same measured MACs; the export speedups in it are against the dense network timed in the same process.

    OMP_NUM_THREADS=1 nohup python benchmarks/bench_compare.py --root ../shared/data/cifar10/train \
        --out runs/bench-compare > runs/bench-compare.log 2>&1 &

Interrupted? Run it again with --out pointing at the compare-<stamp> folder it made: finished methods are
reused, an unfinished one resumes from its last epoch checkpoint. The same works for sharing cores: a
second process with other `--methods` and `--out` on that folder trains them alongside, and a last run
with every method (after deleting the folder's exports/ to re-time them on a quiet machine) writes the
whole leaderboard.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from compressor.compare import CompareOptions, markdown, run_compare

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "resnet20_cifar10.yaml"
# Ours, the strongest structured peers and the two dense references first: a budget cut short still
# answers the main question (and whether a gap comes from the optimizer or from the pruning).
ORDER = "emmcmc,depgraph,l1_filter,sgd,avb,slimming,random,snip,gmp,magnitude"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="CIFAR-10 train split as <class>/<image> folders")
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--val-limit", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--methods", default=ORDER)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared cores: 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compare"))
    parser.add_argument("--method-set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="one method's setting, as `compressor compare --method-set`")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start, target_epoch = max(1, round(0.2 * args.epochs)), max(2, round(0.6 * args.epochs))
    overrides = [
        "data.name=imagefolder",
        f"data.root={args.root}",
        "data.image_size=32",
        "data.val_split=0.1",
        f"data.limit={args.limit}",
        f"data.val_limit={args.val_limit}",
        f"train.epochs={args.epochs}",
        "train.batch_size=128",
        f"prune.start_epoch={start}",
        f"prune.target_epoch={target_epoch}",
        # the recipe's emmcmc section (T = 1/N, beta1 0.9, C2_0 0.1; avb shares it) fitted to this budget:
        "method.cycles=1",
        "method.samples_per_cycle=3",
        f"method.warmup_epochs={start}",
    ]
    opts = CompareOptions(
        recipe=RECIPE,
        methods=args.methods.split(","),
        target=args.target,
        overrides=overrides,
        method_overrides=args.method_set,
        seeds=args.seeds,
    )

    def progress(label: str, event: object) -> None:
        from compressor.sinks.console import event_line

        line = event_line(event)  # type: ignore[arg-type]
        if line is not None:
            print(f"[{label}] {line}", flush=True)

    result = run_compare(opts, args.out, on_event=progress)
    board = result.board
    print(markdown(board))
    rows = {row["method"]: row for row in board["rows"]}
    ours = rows.get("emmcmc")
    if ours is not None:
        for row in board["rows"]:
            if row["kind"] == "structured" and row["method"] != "emmcmc":
                print(
                    f"emmcmc vs {row['method']:<10} at {100 * ours['mac_reduction']:.1f} / "
                    f"{100 * row['mac_reduction']:.1f} % MACs removed: accuracy "
                    f"{100 * (ours['accuracy'] - row['accuracy']):+.2f} pt, ECE {ours['ece'] - row['ece']:+.4f}"
                )
    print(result.folder)


if __name__ == "__main__":
    main()
