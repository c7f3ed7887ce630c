"""Per-epoch curves and the reliability diagram, drawn with textual-plotext."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual_plotext import PlotextPlot

from compressor.tui.state import EpochPoint

RGB = tuple[int, int, int]
AMBER, CYAN, GREEN, MAGENTA, GRAY = (255, 170, 0), (0, 200, 230), (120, 220, 80), (230, 80, 200), (128, 128, 128)
FAINT = (40, 60, 70)  # what a reliability bar fades towards
FEW_FRACTION = 0.01  # bins holding less than this share of the examples are called out under the diagram


@dataclass(frozen=True)
class Series:
    """One curve. Colours are RGB: plotext's named colours go through the terminal theme's ANSI palette and
    come out differently from the same names in the (Rich) legend."""

    label: str
    attr: str
    color: RGB
    scale: float = 1.0

    @property
    def style(self) -> str:
        return "rgb({},{},{})".format(*self.color)


class CurvePlot(PlotextPlot):
    """One panel of curves over epochs; a series with no values yet (e.g. BMA before the first sample) is
    simply not drawn. The legend is the coloured border title: inside the plot it would hide the top rows,
    which is exactly where "100% remaining" and early losses are drawn."""

    def __init__(self, title: str, series: list[Series], *, ylim: tuple[float, float] | None = None,
                 ymax: float | None = None, id: str | None = None) -> None:
        """`ylim` fixes the axis; `ymax` only caps it (a percentage never reads above 100 on its axis)."""
        super().__init__(id=id, classes="panel")
        self.series, self.ylim, self.ymax = series, ylim, ymax
        self.border_title = title + "".join(f"  [{s.style}]━ {s.label}[/]" for s in series if len(series) > 1)
        self.drawn: dict[str, list[float]] = {}

    def on_mount(self) -> None:  # Textual also runs PlotextPlot.on_mount: handlers are called along the MRO
        self.show([])

    def show(self, points: list[EpochPoint]) -> None:
        plt = self.plt
        plt.clear_data()
        self.drawn = {}
        for s in self.series:
            pts = [(p.epoch, getattr(p, s.attr)) for p in points if getattr(p, s.attr) is not None]
            if not pts:
                continue
            xs, ys = [x for x, _ in pts], [s.scale * y for _, y in pts]
            plt.plot(xs, ys, color=s.color, marker="braille")
            self.drawn[s.label] = ys
        if points:
            last = points[-1].epoch
            plt.xlim(min(p.epoch for p in points) - 0.05, last + 0.05)
            step = max(1, (last + 7) // 8)
            plt.xticks(list(range(points[0].epoch, last + 1, step)))
        if self.ylim is not None:
            plt.ylim(*self.ylim)
        elif self.ymax is not None and self.drawn:
            low = min(min(ys) for ys in self.drawn.values())
            plt.ylim(max(0.0, min(low - 0.05 * (self.ymax - low), self.ymax - 1.0)), self.ymax)
        latest = ", ".join(f"{label} {ys[-1]:.4g}" for label, ys in self.drawn.items())
        self.border_subtitle = latest or "waiting for the first epoch"
        self.refresh()


def bin_shade(count: int, total: int) -> float:
    """How strongly a reliability bar is drawn: a bin's accuracy over a handful of examples is mostly noise,
    so its bar fades (full strength from 5 % of the examples)."""
    return max(0.15, min(1.0, count / max(1.0, 0.05 * total)))


def blend(low: RGB, high: RGB, weight: float) -> RGB:
    r, g, b = (round(lo + weight * (hi - lo)) for lo, hi in zip(low, high, strict=True))
    return r, g, b


class ReliabilityPlot(PlotextPlot):
    """Accuracy against confidence per bin for the latest evaluation; bars on the diagonal are calibrated.
    A bar's shade says how many examples its bin holds."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "reliability  [rgb({},{},{})]█ sample[/]  [rgb({},{},{})]• BMA[/]".format(*CYAN, *GREEN)
        self.bins: list[dict[str, Any]] = []
        self.shades: list[float] = []
        self.footers = ["waiting for the first evaluation"]

    def on_mount(self) -> None:
        self.show([], None)

    def show(self, bins: list[dict[str, Any]], ece: float | None,
             bma_bins: list[dict[str, Any]] | None = None) -> None:
        """Bars: the current sample; dots: the Bayesian model average, once there is one."""
        plt = self.plt
        plt.clear_data()
        self.bins = [b for b in bins if b.get("count")]
        plt.plot([0.0, 1.0], [0.0, 1.0], color=GRAY, marker="braille")
        n = sum(int(b["count"]) for b in self.bins)
        self.shades = [bin_shade(int(b["count"]), n) for b in self.bins]
        for b, shade in zip(self.bins, self.shades, strict=True):
            plt.bar([(b["lo"] + b["hi"]) / 2], [b["accuracy"]], width=0.8 * (b["hi"] - b["lo"]),
                    color=blend(FAINT, CYAN, shade), reset_ticks=False)
        bma = [b for b in bma_bins or [] if b.get("count")]
        if bma:
            plt.scatter([(b["lo"] + b["hi"]) / 2 for b in bma], [b["accuracy"] for b in bma], color=GREEN,
                        marker="dot")
        plt.xlim(0.0, 1.0)
        plt.ylim(0.0, 1.0)
        plt.xlabel("confidence")
        few = sum(1 for b in self.bins if b["count"] < FEW_FRACTION * n)
        if ece is None or not n:
            self.footers = ["waiting for the first evaluation"]
        elif few:
            self.footers = [f"ECE {ece:.4f} · {n} examples · {few} faint (<1 % each)",
                            f"ECE {ece:.4f} · {n} ex. · {few} faint (<1 %)", f"ECE {ece:.4f} · {few} faint"]
        else:
            self.footers = [f"ECE {ece:.4f} · {n} examples", f"ECE {ece:.4f}"]
        self._fit_footer()
        self.refresh()

    def on_resize(self) -> None:
        self._fit_footer()

    def _fit_footer(self) -> None:
        """The longest footer the border has room for: a cut-off one loses the very numbers it is there for."""
        room = self.size.width - 6 if self.size.width else 10**6
        self.border_subtitle = next((text for text in self.footers if len(text) <= room), self.footers[-1])
