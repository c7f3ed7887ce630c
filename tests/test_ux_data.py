"""ImageFolder image size: without `data.image_size` the images' own size (at most 224), never a silent 49x
upscale of 32 px images to 224; an explicit size that upscales more than 2x is warned about."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from compressor.data import build_data

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def image_folder(root: Path, side: tuple[int, int], per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side[1], side[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:02d}.png")
    return root


def data_section(root: Path, image_size: int | None) -> types.SimpleNamespace:
    return types.SimpleNamespace(name="imagefolder", root=str(root), limit=None, val_limit=None, val_split=0.25,
                                 augment=None, download=False, image_size=image_size, cache=None)


def test_small_images_train_at_their_own_size_and_the_run_says_so(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "images", (16, 16))
    overrides = ["data.name=imagefolder", f"data.root={root}", "method={name: sgd}", "prune={}", "train.epochs=1",
                 "train.batch_size=6"]
    result = CliRunner().invoke(app, ["train", str(ROOT / "recipes" / "quickstart.yaml"),
                                      *[a for o in overrides for a in ("--set", o)], "--no-tui",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    summary = json.loads((Path(result.stdout.strip()) / "summary.json").read_text())
    assert summary["input_shape"] == [3, 16, 16]
    assert summary["macs_dense"] < 12e6  # ResNet-20 at 16 px, not the ~2 G MACs at 224 px
    lines = result.stderr.splitlines()
    assert lines[0].startswith("training resnet20 on imagefolder (19 train / 5 eval, input 3x16x16)")
    assert lines[1] == ("[warning] imagefolder: images are used at 16x16 px (the images' median shorter side is "
                        "16 px); set data.image_size to change it")


def test_large_images_default_to_224(tmp_path: Path) -> None:
    root = image_folder(tmp_path, (300, 260), per_class=3)
    bundle = build_data(data_section(root, None), seed=0)
    assert bundle.input_shape == (3, 224, 224)
    assert "images are used at 224x224 px (the images' median shorter side is 260 px, capped at 224)" \
        in bundle.warnings[0]


def test_an_explicit_size_that_upscales_more_than_twice_is_warned_about(tmp_path: Path) -> None:
    root = image_folder(tmp_path, (32, 32), per_class=3)
    upscaled = build_data(data_section(root, 224), seed=0)
    assert upscaled.input_shape == (3, 224, 224)
    assert upscaled.warnings == [("imagefolder: data.image_size 224 upscales images whose median shorter side is "
                                  "32 px 7.0x: about 49x the compute for no new detail; set data.image_size=32 "
                                  "unless the model needs more")]
    assert build_data(data_section(root, 48), seed=0).warnings == []
