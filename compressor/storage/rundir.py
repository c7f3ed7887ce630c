"""Run directories: `<out>/<name>-<timestamp>/`, never overwritten, with JSON files written atomically."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from compressor.errors import RunDirError


def create_run_dir(out: Path, name: str, *, checkpoints: bool = True) -> Path:
    """Make a fresh directory `<out>/<name>-<timestamp>`; a clash (same name, same second) gets a numeric
    suffix, never reuse. A run directory gets its `checkpoints/` subfolder; `checkpoints=False` makes a bare
    folder (a compare folder, `compare-<timestamp>`)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise RunDirError(f"{out}: output folder is not writable")
    for k in range(1000):
        path = out / (f"{safe}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create the run directory ({exc.strerror})") from None
        if checkpoints:
            (path / "checkpoints").mkdir()
        return path
    raise RunDirError(f"{out}: too many runs named {safe}-{stamp}")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


class JsonlWriter:
    """metrics.jsonl: one JSON object per event, flushed as written so followers see it at once."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115  (held open for the run, closed in close())

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records (a half-written last line from a live run is skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records
