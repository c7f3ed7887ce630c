"""Training throughput under the dashboard (headless, 160x48) vs the plain ConsoleSink path, same recipe.

The dashboard renders on the main thread while training runs in a worker thread, so any UI work competes
with the training loop for the GIL. The shipped quickstart recipe (ResNet-20 on digits: tiny images, so a
step is mostly Python overhead) with `train.log_every=1` (a step event every step) as the worst case.
Interleaved repeats in one process; prints the engine's train images/s for both and their ratio (target
>= 0.97), and the UI thread's CPU time as a share of the run's wall time: with a core to spare, the UI can
only slow training while it holds the GIL, so that share bounds the slowdown when wall-clock noise is larger.

    python benchmarks/bench_tui.py --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from compressor.engine.trainer import run
from compressor.events import Event
from compressor.recipe import Recipe, load_recipe
from compressor.sinks.console import ConsoleSink
from compressor.tui.app import Dashboard

ROOT = Path(__file__).resolve().parent.parent


def images_per_second(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["train_images_per_second"]


def plain(recipe: Recipe, out: Path, device: str) -> float:
    """What `compressor train --no-tui` does, its lines sent to /dev/null."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        sink = ConsoleSink(tty=False)
        with sink:
            return images_per_second(run(recipe, sink, out_dir=out, device=device))


def dashboard(recipe: Recipe, out: Path, device: str) -> tuple[float, float]:
    """(train images/s, UI thread CPU seconds per wall second while training)."""

    def job(on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> Path:
        return run(recipe, on_event, should_stop, out_dir=out, device=device)

    app = Dashboard(job=job)
    ui: list[float] = []

    async def drive() -> None:
        async with app.run_test(headless=True, size=(160, 48)) as pilot:
            cpu, wall = time.thread_time(), time.monotonic()
            while app.run_dir is None and app.error is None:
                await asyncio.sleep(0.2)
            ui.append((time.thread_time() - cpu) / (time.monotonic() - wall))
            await pilot.press("q")

    asyncio.run(drive())
    if app.error is not None:
        raise app.error
    assert app.run_dir is not None
    return images_per_second(app.run_dir), ui[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra recipe override, e.g. train.epochs=3 (default: the recipe as shipped)")
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"train.log_every={args.log_every}",
                                                                  *args.overrides])
    print(f"quickstart ({recipe.method.name}, {recipe.model.name}) on {args.device}: {recipe.train.epochs} "
          f"epochs, batch {recipe.train.batch_size}, a step event every {args.log_every} step(s), "
          f"overrides {args.overrides or 'none'}", flush=True)
    ours, ref, ui = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in ("plain", "dashboard") if i % 2 == 0 else ("dashboard", "plain"):
                if mode == "plain":
                    ref.append(plain(recipe, Path(tmp), args.device))
                else:
                    ips, share = dashboard(recipe, Path(tmp), args.device)
                    ours.append(ips)
                    ui.append(share)
            print(f"plain {ref[-1]:.1f} img/s   dashboard {ours[-1]:.1f} img/s   UI thread CPU {100 * ui[-1]:.1f}%",
                  flush=True)
    ratios = [o / r for o, r in zip(ours, ref, strict=True)]
    print(f"median: plain {statistics.median(ref):.1f} img/s, dashboard {statistics.median(ours):.1f} img/s, "
          f"ratio {statistics.median(ratios):.3f} (per repeat: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"UI thread CPU {100 * statistics.median(ui):.1f}% of wall time")


if __name__ == "__main__":
    main()
