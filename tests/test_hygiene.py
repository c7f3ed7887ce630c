"""Import hygiene: the engine never imports UI libraries; `compressor --help` never imports torch."""

from __future__ import annotations

import subprocess
import sys


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_engine_imports_no_ui() -> None:
    mods = imported_after("import compressor.engine.trainer, compressor.engine.evaluate, compressor.methods")
    assert "compressor.engine.trainer" in mods
    assert not {m for m in mods if m.split(".")[0] in ("textual", "rich", "textual_plotext")}


def test_help_does_not_import_torch() -> None:
    mods = imported_after("from compressor.cli import app")
    assert "torch" not in mods
    result = subprocess.run([sys.executable, "-m", "compressor", "--help"], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout
