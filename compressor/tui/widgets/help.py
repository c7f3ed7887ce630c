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
  [b]q[/b]       stop safely: finish the current step, write checkpoints/last.pt, quit
          (continue later with [i]compressor train RECIPE --resume RUN_DIR[/i]);
          once the run has finished or failed, just quit
  [b]p[/b]       pause / resume training (the training thread waits between steps)
  [b]?[/b]       this help (escape closes it)
  arrows, page up/down scroll the panels on a small terminal

[b]Panels[/b]
  header       run, model, dataset, method, device; epoch/step, progress, ETA, img/s
  curves       per epoch: train loss; eval accuracy and NLL (sample, and BMA once samples exist);
               ECE; % of parameters, channels and MACs remaining
  reliability  accuracy per confidence bin for the latest evaluation (diagonal = calibrated)
  layers       kept/total channels per layer, updated on every prune
  optimizer    learning rate and whatever the method reports (temperature, τ, cycle, samples)
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
