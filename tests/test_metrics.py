"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.metrics import classification_metrics, count_macs, count_params, reliability_bins


def test_ece_nll_brier_on_constructed_example() -> None:
    # 4 examples, 2 classes. Confidences 0.9, 0.9 (bin 13 of 15), 0.6, 0.6 (bin 9).
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 0])
    m = classification_metrics(probs, labels, bins=15)
    # accuracy: preds 0,0,0,1 -> correct, wrong, correct, wrong
    assert m["accuracy"] == 0.5
    # ECE: bin(0.9): |acc 0.5 - conf 0.9| * 2/4 = 0.2 ; bin(0.6): |0.5 - 0.6| * 2/4 = 0.05
    assert math.isclose(m["ece"], 0.25, abs_tol=1e-6)
    nll = -(math.log(0.9) + math.log(0.1) + math.log(0.6) + math.log(0.4)) / 4
    assert math.isclose(m["nll"], nll, rel_tol=1e-5)
    brier = (2 * 0.01 + 2 * 0.81 + 2 * 0.16 + 2 * 0.36) / 4
    assert math.isclose(m["brier"], brier, rel_tol=1e-5)
    bins = reliability_bins(probs, labels, 15)
    assert bins[13]["count"] == 2 and math.isclose(bins[13]["accuracy"], 0.5)
    assert bins[9]["count"] == 2 and math.isclose(bins[9]["confidence"], 0.6, rel_tol=1e-6)
    assert sum(b["count"] for b in bins) == 4


def test_perfect_confident_predictions_have_zero_ece() -> None:
    probs = torch.eye(3)
    m = classification_metrics(probs, torch.arange(3))
    assert m["accuracy"] == 1.0 and m["ece"] < 1e-6 and m["brier"] < 1e-12


def test_param_and_mac_counts() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():
        model[0].weight[:2].zero_()
    total, nonzero = count_params(model)
    assert total == 8 * 27 + 128 * 10 + 10
    assert nonzero == total - 2 * 27
    macs = count_macs(model, torch.zeros(1, 3, 4, 4))
    assert macs == 8 * 27 * 16 + 128 * 10


def test_layer_macs_equals_flop_counter_on_resnet() -> None:
    from compressor.metrics import layer_macs, output_positions
    from compressor.models import create_model

    model = create_model("resnet20", num_classes=10, input_shape=(3, 16, 16))
    x = torch.zeros(1, 3, 16, 16)
    assert layer_macs(model, output_positions(model, x)) == count_macs(model, x)
