"""`compressor export` and `compressor compare`: what a run becomes once trained."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from compressor.cli.common import DeviceOpt, SetOpt, StopFlag, app, check_device, fail, friendly_errors


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="run directory")],
    onnx: Annotated[bool, typer.Option("--onnx", help="export to ONNX (the only format so far)")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE.onnx",
                                                help="ONNX file (default exports/<run-name>[-variant].onnx); the "
                                                "report and PyTorch model go beside it as .json and .pt")] = None,
    masked: Annotated[bool, typer.Option("--masked", help="keep the dense shapes, pruned weights zero")] = False,
    round_to: Annotated[int | None, typer.Option("--round-to", metavar="N", help="keep channel counts multiples "
                                                 "of N by restoring the strongest pruned channels")] = None,
    bma: Annotated[bool, typer.Option("--bma", help="one graph averaging the posterior samples' softmax "
                                      "(output `probs`)")] = False,
    opset: Annotated[int, typer.Option("--opset", metavar="N", help="ONNX opset, 13..20")] = 17,
    checkpoint: Annotated[str, typer.Option("--checkpoint", metavar="last|best|sample-K",
                                            help="which weights to export")] = "last",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing export")] = False,
    set_: SetOpt = None,
) -> None:
    """Export a run with its pruned channels removed, verify it against PyTorch and report size and speed
    (the last line on stdout is the ONNX file)."""
    with friendly_errors():
        if not onnx:
            fail("choose an export format: --onnx", 2)
        from compressor.export.pipeline import ExportOptions, export_run, option_problem
        from compressor.export.report import print_report

        opts = ExportOptions(run_dir=run_dir, output=output, masked=masked, round_to=round_to, bma=bma,
                             opset=opset, checkpoint=checkpoint, force=force, overrides=set_ or [])
        problem = option_problem(opts)
        if problem:
            fail(problem, 2)

        def progress(message: str) -> None:
            typer.echo(f"{message}…", err=True)

        report = export_run(opts, log=progress if sys.stderr.isatty() else None)
        print_report(report)
        typer.echo(report["onnx"])


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(metavar="RUN_DIR|MODEL.pt|MODEL.onnx", help="a run directory, or a file "
                                          "written by `compressor export`")],
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUTS...", help="image files, folders of images, or "
                                                 ".npz files with an array X")],
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE.csv|FILE.json",
                                                help="write here (default: CSV on stdout)")] = None,
    ood_threshold: Annotated[float | None, typer.Option("--ood-threshold", metavar="NATS",
                                                        help="flag inputs whose predictive entropy exceeds this "
                                                        "(ln K is a uniform guess over K classes)")] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", metavar="last|best",
                                            help="a run directory's checkpoint, when it has no posterior samples "
                                            "or with --no-bma")] = "last",
    no_bma: Annotated[bool, typer.Option("--no-bma", help="a run directory's checkpoint instead of the average "
                                         "of its posterior samples")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing output file")] = False,
) -> None:
    """Predict each input's class with its probability, predictive entropy and, from posterior samples, their
    disagreement; --ood-threshold flags the uncertain ones."""
    with friendly_errors():
        if output is not None and output.suffix not in (".csv", ".json"):
            fail(f"-o {output}: the file name must end in .csv or .json", 2)
        if ood_threshold is not None and ood_threshold < 0:
            fail(f"--ood-threshold {ood_threshold}: an entropy is at least 0", 2)
        if checkpoint not in ("last", "best"):
            fail(f"--checkpoint {checkpoint}: expected last or best", 2)
        from compressor.export.predict import load_predictor, max_entropy, read_inputs, write
        from compressor.export.predict import predict as run_predict

        predictor = load_predictor(model, checkpoint, bma=not no_bma)
        names, x = read_inputs(inputs, predictor)
        rows = run_predict(predictor, names, x, ood_threshold)
        header = {"model": predictor.source, "classes": predictor.classes, "ood_threshold": ood_threshold,
                  "max_entropy": max_entropy(predictor)}
        write(rows, output, force, header, typer.echo)
        flagged = sum(bool(r.get("uncertain")) for r in rows)
        tail = (f"; {flagged} uncertain (entropy > {ood_threshold:g} nats)" if ood_threshold is not None else "")
        typer.echo(f"{len(rows)} prediction{'s' if len(rows) != 1 else ''} from {predictor.source}{tail}; entropy ln "
                   f"{len(predictor.classes)} = "
                   f"{max_entropy(predictor):.3f} is a uniform guess", err=True)


@app.command()
def compare(
    recipe: Annotated[Path | None, typer.Argument(metavar="RECIPE", help="recipe YAML giving model, data and "
                                                  "train (its method section seeds that method's settings)")] = None,
    methods: Annotated[str | None, typer.Option("--methods", metavar="A,B,...", help="comma-separated, e.g. "
                                                "emmcmc,l1_filter,sgd (default: all ten)")] = None,
    target: Annotated[float, typer.Option("--target", metavar="FRACTION", help="fraction to remove: of the MACs "
                                          "for structured methods, of the weights for unstructured ones")] = 0.5,
    set_: SetOpt = None,
    method_set: Annotated[list[str] | None, typer.Option("--method-set", metavar="NAME:KEY=VALUE",
                                                         help="change one method's setting (repeatable); sgd: and "
                                                         "avb: also reach the methods built on them")] = None,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for compare-<stamp>/, or an existing "
                                      "compare folder to continue")] = Path("runs"),
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="K", help="seeds per method (mean ± std)")] = 1,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="COMPARE_DIR", help="continue this compare "
                                                "folder with the settings stored in it")] = None,
    device: DeviceOpt = "auto",
    no_export: Annotated[bool, typer.Option("--no-export", help="skip the ONNX export and latency of the "
                                            "structured methods")] = False,
) -> None:
    """Train several methods under one budget and target; write leaderboard.json/.md and plots (the last
    line printed is the compare folder). Finished runs in the folder are reused, interrupted ones resumed."""
    from compressor.cli.hints import dataset_of

    with friendly_errors(dataset=lambda: dataset_of(recipe, set_ or []) if recipe is not None else None):
        import json

        from compressor.compare import DEFAULT_METHODS, MANIFEST, CompareOptions, ConsoleReporter, run_compare

        check_device(device)
        if resume is not None:
            if recipe is not None or methods is not None or set_ or method_set:
                fail("--resume takes every setting from the compare folder; drop RECIPE, --methods, --set and "
                     "--method-set", 2)
            if not (resume / MANIFEST).is_file():
                fail(f"{resume}: not a compare folder (no {MANIFEST})", 3)
            opts = CompareOptions.from_json(json.loads((resume / MANIFEST).read_text(encoding="utf-8")))
            out = resume
        elif recipe is None:
            fail("give a RECIPE (or --resume COMPARE_FOLDER)", 2)
        else:
            names = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(DEFAULT_METHODS)
            opts = CompareOptions(recipe=recipe, methods=names, target=target, overrides=set_ or [],
                                  method_overrides=method_set or [], seeds=seeds,
                                  device=None if device == "auto" else device, export=not no_export)
        reporter = ConsoleReporter()
        with StopFlag() as stop:
            result = run_compare(opts, out, on_event=reporter.event, on_board=reporter.board, should_stop=stop)
        for name, message in result.errors.items():
            typer.echo(f"error: {name}: {message}", err=True)
        if result.stopped:
            typer.echo(f"stopped; continue with: compressor compare --resume {result.folder}", err=True)
            typer.echo(str(result.folder))
            raise typer.Exit(128 + (stop.signum or signal.SIGINT))
        typer.echo(str(result.folder))
        if result.errors:
            raise typer.Exit(1)
