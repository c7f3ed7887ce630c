"""`?`: what the keys do and how to read the panels."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]Keys[/b]
  [b]q[/b]  stop safely: finish the step, write checkpoints/last.pt, quit;
     continue with [i]compressor train RECIPE --resume RUN_DIR[/i].
     Once the run has finished or failed, q just closes.
  [b]p[/b]  pause / resume training (the training thread waits between steps)
  [b]?[/b]  this help (escape closes it)
  tab, arrows, page up/down: move between and scroll the panels

[b]Panels[/b]
  header       run, model, data, method, device; epoch/step, ETA, lr, img/s
  curves       per epoch: train loss; eval accuracy, NLL and ECE (sample,
               and BMA once posterior samples exist); % of parameters,
               channels and MACs remaining
  reliability  accuracy per confidence bin, latest evaluation (bars on the
               diagonal are calibrated; dots: BMA)
  layers       kept/total channels per layer, updated on every prune
  optimizer    learning rate C2 and whatever the method reports
               (temperature, tau, cycle, samples collected, E-step)
  log          prunes, E-steps, posterior samples, warnings
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: auto; max-width: 100%; height: auto; max-height: 100%;
                                  border: round $accent; background: $surface; padding: 0 1; }
    HelpScreen Static { width: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP)
