"""`compressor predict`: class, probability and uncertainty for new inputs, from a run directory (its checkpoint,
or the Bayesian model average of its posterior samples), an exported `.pt` or an `.onnx` file.

Per example: the predicted class and its probability under the (averaged) predictive distribution, the
predictive entropy (nats; ln K is a uniform guess), and, where the posterior samples are at hand (a run with
samples, a `--bma` `.pt` export), their mutual information with the prediction (the epistemic part of the
entropy) and the share of samples voting for another class. An averaging ONNX graph only gives the average.
Inputs are preprocessed as in training: images resized (shorter side) and centre-cropped to the model's input
size, scaled to [0, 1] and normalised with the training mean/std; tabular rows standardised per feature.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from compressor.errors import DataError, RunDirError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
BATCH = 256


@dataclass
class Predictor:
    """A model as predict needs it: what its inputs look like and a function giving every member's softmax."""

    source: str
    classes: list[str]
    input_shape: tuple[int, ...]
    mean: list[float]
    std: list[float]
    members: Callable[[np.ndarray], np.ndarray]  # (B, ...) normalised inputs -> (S, B, K) probabilities
    averaged_only: bool  # the members' average is all there is (an averaging ONNX graph)

    @property
    def tabular(self) -> bool:
        return len(self.input_shape) == 1


def _torch_members(networks: list[torch.nn.Module]) -> Callable[[np.ndarray], np.ndarray]:
    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(x)
        return torch.stack([net.eval()(batch).softmax(dim=1) for net in networks]).numpy()

    return run


def _from_run(run_dir: Path, checkpoint: str, bma: bool) -> Predictor:
    from compressor.engine.session import build_model
    from compressor.recipe import Recipe, stored_recipe
    from compressor.storage.checkpoint import load_checkpoint, load_sample

    summary_path, recipe_path = run_dir / "summary.json", run_dir / "recipe.yaml"
    if not summary_path.is_file() or not recipe_path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory that trained (no summary.json or recipe.yaml)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    recipe = Recipe.model_validate(stored_recipe(yaml.safe_load(recipe_path.read_text(encoding="utf-8"))))
    shape = tuple(summary["input_shape"])
    model = build_model(recipe, len(summary["classes"]), shape)
    samples = sorted((run_dir / "samples").glob("sample-*.pt")) if bma else []
    states = [load_sample(p) for p in samples] or [load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
                                                   ["model"]]
    networks = []
    for state in states:
        member = copy.deepcopy(model)
        member.load_state_dict(state)
        networks.append(member)
    what = f"BMA of {len(samples)} samples" if samples else f"checkpoint {checkpoint}"
    return Predictor(f"{run_dir.name} ({what})", list(summary["classes"]), shape, list(summary["mean"]),
                     list(summary["std"]), _torch_members(networks), False)


def _from_model_file(path: Path) -> Predictor:
    from compressor.storage.modelfile import load_model_file

    payload, networks = load_model_file(path)
    what = f"BMA of {len(networks)} samples" if "samples" in payload else "exported model"
    return Predictor(f"{path.name} ({what})", list(payload["classes"]), tuple(payload["input_shape"]),
                     list(payload["mean"]), list(payload["std"]), _torch_members(networks), False)


def _from_onnx(path: Path) -> Predictor:
    import onnx

    from compressor.export import onnx as X

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001  (protobuf raises several types for a file that is not ONNX)
        raise RunDirError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from None
    meta = X.read_metadata(proto)
    missing = [k for k in ("classes", "input_size", "mean", "std") if k not in meta]
    if missing:
        raise RunDirError(f"{path}: not an export of compressor (metadata lacks {', '.join(missing)})")
    sess = X.session(proto)
    averaged = meta.get("output") == "probs"

    def run(x: np.ndarray) -> np.ndarray:
        out = torch.from_numpy(X.run(sess, x))
        return (out if averaged else out.softmax(dim=1)).numpy()[None]

    return Predictor(f"{path.name} (ONNX{', BMA' if averaged else ''})", list(meta["classes"]),
                     tuple(meta["input_size"]), list(meta["mean"]), list(meta["std"]), run, averaged)


def load_predictor(path: Path, checkpoint: str = "last", bma: bool = True) -> Predictor:
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise RunDirError(f"{path}: no such ONNX file")
        return _from_onnx(path)
    if path.suffix == ".pt" and path.is_file():
        return _from_model_file(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a run directory, .pt or .onnx file")
    return _from_run(path, checkpoint, bma)


def _image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One image file as the model's (C, H, W) uint8 input (grey for one channel)."""
    from compressor.data.imagefolder import DECODE_ERRORS, decode

    channels, size = shape[0], shape[1]
    try:
        rgb = decode(str(path), size)
    except DECODE_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if channels == 1:
        return np.round(rgb.astype(np.float32).mean(axis=0, keepdims=True)).astype(np.uint8)
    return rgb


def _npz(path: Path, p: Predictor) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "X" not in arrays:
                raise DataError(f"{path}: expected an array X of inputs, found {', '.join(arrays.files) or 'none'}")
            x = np.asarray(arrays["X"])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim != 1 + len(p.input_shape) or tuple(x.shape[1:]) != p.input_shape:
        raise DataError(f"{path}: X has shape {tuple(x.shape)}; the model takes (n, {', '.join(map(str, p.input_shape))})")
    return x


def read_inputs(inputs: Sequence[Path], p: Predictor) -> tuple[list[str], np.ndarray]:
    """(a name per example, the normalised inputs): image files, folders of them (recursively), .npz files."""
    names, rows = [], []
    for item in inputs:
        if item.suffix == ".npz":
            x = _npz(item, p)
            names += [f"{item}[{i}]" for i in range(len(x))]
            rows.append(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 and not p.tabular else 1.0))
            continue
        if p.tabular:
            raise DataError(f"{item}: the model takes tabular rows: give an .npz with an array X")
        files = sorted(f for f in item.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) if item.is_dir() \
            else [item]
        if not item.exists() or not files:
            raise DataError(f"{item}: {'no image files in this folder' if item.exists() else 'no such file'}")
        names += [str(f) for f in files]
        rows.append(np.stack([_image(f, p.input_shape) for f in files]).astype(np.float32) / 255.0)
    x = np.concatenate(rows)
    view = (1, -1) if p.tabular else (1, -1, 1, 1)
    mean, std = np.asarray(p.mean, np.float32).reshape(view), np.asarray(p.std, np.float32).reshape(view)
    return names, ((x - mean) / std).astype(np.float32)


def _entropy(probs: np.ndarray) -> np.ndarray:
    return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=-1)


def predict(p: Predictor, names: list[str], x: np.ndarray, ood_threshold: float | None) -> list[dict[str, Any]]:
    """One row per example (see the module docstring)."""
    members = np.concatenate([p.members(x[i:i + BATCH]) for i in range(0, len(x), BATCH)], axis=1)
    mean = members.mean(axis=0)
    top, entropy = mean.argmax(axis=1), _entropy(mean)
    several = members.shape[0] > 1
    rows = []
    for i, name in enumerate(names):
        row: dict[str, Any] = {"input": name, "class": p.classes[top[i]], "probability": float(mean[i, top[i]]),
                               "entropy": float(entropy[i])}
        if several:
            row["mutual_information"] = float(entropy[i] - _entropy(members[:, i]).mean())
            row["disagreement"] = float((members[:, i].argmax(axis=1) != top[i]).mean())
        if ood_threshold is not None:
            row["uncertain"] = bool(entropy[i] > ood_threshold)
        row["probabilities"] = [float(v) for v in mean[i]]
        rows.append(row)
    return rows


def max_entropy(p: Predictor) -> float:
    return math.log(len(p.classes))


def write(rows: list[dict[str, Any]], output: Path | None, force: bool, header: dict[str, Any],
          echo: Callable[[str], None]) -> None:
    """CSV (stdout, or a .csv file) or JSON (a .json file); an existing file is only replaced with --force."""
    import csv
    import io

    from compressor.errors import ExportError

    if output is not None and output.exists() and not force:
        raise ExportError(f"{output} already exists; pass --force to overwrite it")
    if output is not None and output.suffix == ".json":
        text = json.dumps({**header, "predictions": rows}, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        fields = [k for k in rows[0] if k != "probabilities"] if rows else ["input"]
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
        text = buffer.getvalue()
    if output is None:
        echo(text.rstrip("\n"))
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, output)
