"""Variable selection that generalises: one recipe (`recipes/variable_selection.yaml`, no per-problem tuning)
on a family of generated problems. Each problem has 5 true features among d equicorrelated ones (correlation
0.5 through a shared factor), an additive or an interaction function, balanced or 70/30 labels; a problem is
recovered when the run keeps exactly the true features. Prints one row per problem and the count recovered.

    OMP_NUM_THREADS=1 python benchmarks/bench_variable_selection.py --out runs/bench-varsel
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "variable_selection.yaml"
# (n, d, function, positive share, data seed): every combination of the family's axes appears at least once
PROBLEMS = [
    (2000, 1000, "additive", 0.5, 0),
    (2000, 100, "additive", 0.5, 1),
    (6000, 100, "interaction", 0.3, 2),
    (6000, 1000, "additive", 0.3, 3),
    (2000, 100, "interaction", 0.5, 4),
    (6000, 100, "additive", 0.5, 5),
    (2000, 1000, "interaction", 0.3, 6),
    (6000, 1000, "interaction", 0.5, 7),
    (2000, 100, "additive", 0.3, 8),
    (6000, 100, "interaction", 0.5, 9),
]


def make_problem(n: int, d: int, kind: str, positive: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = np.sqrt(0.5) * rng.standard_normal((n, 1)) + np.sqrt(0.5) * rng.standard_normal((n, d))
    true = sorted(rng.choice(d, size=5, replace=False).tolist())
    t = x[:, true]
    if kind == "additive":
        f = 2 * t[:, 0] - 2 * t[:, 1] + 2 * np.tanh(2 * t[:, 2]) + 1.5 * t[:, 3] + 2 * np.sin(t[:, 4])
    else:
        f = 1.5 * t[:, 0] + 2 * t[:, 1] * t[:, 2] - 2 * np.tanh(2 * t[:, 3]) + 2 * np.sin(t[:, 4])
    f = f + 0.3 * rng.standard_normal(n)
    y = (f > np.quantile(f, 1 - positive)).astype(np.int64)
    return x.astype(np.float32), y, true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-varsel"))
    parser.add_argument("--only", type=int, nargs="*", help="problem indices to run (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every problem, e.g. method.rule=paper (the paper's E-step)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (n, d, kind, positive, seed) in enumerate(PROBLEMS):
        if args.only and index not in args.only:
            continue
        x, y, true = make_problem(n, d, kind, positive, seed)
        data = args.out / f"problem-{index}.npz"
        np.savez(data, X=x, y=y)
        cmd = [sys.executable, "-m", "compressor", "train", str(RECIPE), "--no-tui", "--out", str(args.out / "runs"),
               "--name", f"problem-{index}", "--set", f"data.root={data}"]
        cmd += [part for override in args.set for part in ("--set", override)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"problem {index}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        summary = json.loads((Path(done.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
        kept = summary["selected_features"]
        inclusion = summary.get("inclusion_probability") or []
        true_p = [round(inclusion[i], 3) for i in true] if inclusion else []
        false_max = max((p for i, p in enumerate(inclusion) if i not in true), default=None)
        row = {"problem": index, "n": n, "d": d, "function": kind, "positive": positive, "true": true,
               "kept": kept, "recovered": kept == true, "accuracy": summary["accuracy"],
               "inclusion_true": true_p, "inclusion_max_false": false_max}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"recovered exactly: {sum(r['recovered'] for r in rows)} of {len(rows)}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
