"""Per-layer channel table: which layers the pruning is thinning, updated on every prune event."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

BAR_WIDTH = 12


def kept_bar(kept: int, total: int) -> Text:
    frac = kept / max(1, total)
    full = round(frac * BAR_WIDTH)
    style = "green" if frac > 0.75 else "yellow" if frac > 0.4 else "red"
    return Text("█" * full, style=style) + Text("░" * (BAR_WIDTH - full), style="dim")


class LayerTable(DataTable):
    """Rows keyed by layer name, so a prune updates cells in place and the scroll position survives."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel", cursor_type="row", zebra_stripes=True)
        self.border_title = "channels per layer"
        self.rows_shown: dict[str, tuple[int, int]] = {}
        self.note = ""

    def on_mount(self) -> None:
        self.add_column("layer", key="layer")
        self.add_column("kept", key="kept")
        self.add_column("", key="bar", width=BAR_WIDTH)
        self.add_column("%", key="pct")
        self.border_subtitle = "waiting for the first report"

    def show(self, layers: list[dict[str, Any]], note: str) -> None:
        names = [str(row["layer"]) for row in layers]
        if names != list(self.rows_shown):
            self.clear()
            self.rows_shown = {}
            for row in layers:
                self.add_row(*self._cells(row), key=str(row["layer"]))
        else:
            for row in layers:
                _, kept, bar, pct = self._cells(row)
                key = str(row["layer"])
                self.update_cell(key, "kept", kept)
                self.update_cell(key, "bar", bar)
                self.update_cell(key, "pct", pct)
        self.rows_shown = {str(r["layer"]): (int(r["kept"]), int(r["total"])) for r in layers}
        self.note = note
        self._fit_subtitle()

    def on_resize(self) -> None:
        self._fit_subtitle()

    def _fit_subtitle(self) -> None:
        """The footer as long as the border has room for: a cut-off footer reads as a different number."""
        if not self.rows_shown:
            return
        kept = sum(k for k, _ in self.rows_shown.values())
        total = sum(t for _, t in self.rows_shown.values())
        short = self.note.split(" (")[0]
        room = self.size.width - 4 if self.size.width else 10**6
        options = [f"{kept}/{total} kept · {self.note}", f"{kept}/{total} · {self.note}",
                   f"{kept}/{total} kept · {short}", f"{kept}/{total} kept"]
        self.border_subtitle = next((text for text in options if len(text) <= room), options[-1])

    @staticmethod
    def _cells(row: dict[str, Any]) -> tuple[str, Text, Text, Text]:
        kept, total = int(row["kept"]), int(row["total"])
        return (str(row["layer"]), Text(f"{kept}/{total}", justify="right"), kept_bar(kept, total),
                Text(f"{100 * kept / max(1, total):.0f}", justify="right"))
