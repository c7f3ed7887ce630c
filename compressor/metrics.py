"""Evaluation metrics (accuracy, NLL, ECE, Brier, reliability bins) and model size/cost counts.

ECE uses torchmetrics' `multiclass_calibration_error` with equal-width top-label bins. Bin-edge rule
(torchmetrics'): a confidence c falls in bin i when edge_i <= c < edge_{i+1}, i.e. left-closed bins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_calibration_error


@torch.no_grad()
def predict_probs(
    model: nn.Module, loader: Iterable, device: torch.device, *, amp: bool = False, channels_last: bool = False
) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (float32, on CPU) and labels for a whole loader, in eval mode."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(y).cpu())
    model.train(was_training)
    return torch.cat(probs), torch.cat(labels).long()


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (same edge rule as the ECE)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    idx = torch.clamp((conf * bins).floor().long(), max=bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "count": n,
            "confidence": float(conf[sel].mean()) if n else 0.0,
            "accuracy": float(correct[sel].mean()) if n else 0.0,
        })
    return out


def classification_metrics(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, Any]:
    """Top-1 accuracy, NLL of the predictive distribution, ECE (top-label, `bins` bins), Brier score."""
    probs = probs.float()
    n, k = probs.shape
    accuracy = float((probs.argmax(dim=1) == labels).float().mean())
    nll = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels))
    ece = float(multiclass_calibration_error(probs, labels, num_classes=k, n_bins=bins, norm="l1"))
    onehot = F.one_hot(labels, k).float()
    brier = float(((probs - onehot) ** 2).sum(dim=1).mean())
    return {
        "accuracy": accuracy,
        "nll": nll,
        "ece": ece,
        "brier": brier,
        "n": n,
        "reliability": reliability_bins(probs, labels, bins),
    }


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameter counts."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


@torch.no_grad()
def count_macs(model: nn.Module, example_input: Tensor) -> float:
    """Multiply-accumulates of one forward pass for one example, measured with torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example_input)
    model.train(was_training)
    return counter.get_total_flops() / 2.0 / example_input.shape[0]


@torch.no_grad()
def output_positions(model: nn.Module, example_input: Tensor) -> dict[str, int]:
    """Output positions (H*W for convs, 1 per example for linears) of every conv/linear, by name.

    Channel pruning never changes them, so one forward pass prices every pruned variant via `layer_macs`.
    """
    sizes: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, out[0].numel() // out.shape[1])))
    was_training = model.training
    model.eval()
    try:
        model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sizes


def layer_macs(model: nn.Module, positions: dict[str, int]) -> float:
    """MACs per example of all conv/linear layers from their widths: what `count_macs` measures, without a
    traced forward (a cheap price for the many candidate networks budget control compares)."""
    total = 0.0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += positions[name] * m.out_channels * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total += positions[name] * m.out_features * m.in_features
    return total


def conv_linear_widths(model: nn.Module, skip: str | None = None) -> dict[str, int]:
    """Output width of every conv/linear layer (the classifier named `skip` excluded)."""
    out = {}
    for name, m in model.named_modules():
        if name == skip:
            continue
        if isinstance(m, nn.Conv2d):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out
