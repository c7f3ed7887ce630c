"""Dashboard panels; each renders from a `RunState` so live, replay and follow look the same."""

from compressor.tui.widgets.curves import CurvePlot, ReliabilityPlot
from compressor.tui.widgets.header import RunHeader
from compressor.tui.widgets.help import HelpScreen
from compressor.tui.widgets.layers import LayerTable
from compressor.tui.widgets.log import EventLog
from compressor.tui.widgets.optimizer import OptimizerPanel

__all__ = ["CurvePlot", "EventLog", "HelpScreen", "LayerTable", "OptimizerPanel", "ReliabilityPlot", "RunHeader"]
