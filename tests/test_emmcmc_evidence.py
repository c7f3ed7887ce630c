"""The evidence E-step of emmcmc: informative posterior, reversible decisions, cost-aware selection, and a spike
that shrinks the groups before they are removed (so the removal itself costs almost nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import compressor.methods.emmcmc as emmcmc_module
from compressor.bayes import cost_price, evidence_slab_probability
from compressor.config import PruneConfig
from compressor.engine.trainer import run
from compressor.methods import TrainContext
from compressor.methods.emmcmc import EMMCMCConfig, EMMCMCMethod
from compressor.prune import build_groups, select_for_target
from compressor.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
EVIDENCE = ["method.rule=evidence"]  # the default (`auto`) takes the paper's rule under a target


class Toy(nn.Module):
    """conv_a's channels run at 16x16 (expensive), conv_b's at 4x4 (cheap)."""

    classifier_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, stride=4, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_a(self.conv_a(x)))
        x = torch.relu(self.bn_b(self.conv_b(x)))
        return self.fc(x.mean(dim=(2, 3)))


def toy_method(tmp_path: Path, **cfg: object) -> EMMCMCMethod:
    model = Toy()
    example = torch.zeros(1, 3, 16, 16)
    ctx = TrainContext(model=model, n_train=1000, steps_per_epoch=10, epochs=8, device=torch.device("cpu"),
                       example_input=example, classifier_name="fc", run_dir=tmp_path,
                       prune=PruneConfig(target=0.3, start_epoch=1, target_epoch=6, round_to=1))
    return EMMCMCMethod(EMMCMCConfig(**{"rule": "evidence", **cfg}), ctx)


def set_evidence(method: EMMCMCMethod, mean: list[float], stderr: list[float], steps: int = 25) -> None:
    """Chain moments that give exactly this mean and standard error of the mean over `steps` steps."""
    assert method.evidence is not None
    m, se = torch.tensor(mean, dtype=torch.float64), torch.tensor(stderr, dtype=torch.float64)
    var = se.square() * steps * (steps - 1) / steps  # population variance behind the sample variance
    method.evidence.total, method.evidence.count = m * steps, steps
    method.evidence.total_sq = (var + m.square()) * steps


def test_posterior_is_informative_near_the_price_and_sure_far_from_it() -> None:
    cost = torch.ones(5)
    evidence = torch.tensor([0.0, 0.9, 1.0, 1.1, 5.0])
    p = evidence_slab_probability(evidence, torch.full((5,), 0.2), cost, price=1.0)
    assert float(p[0]) < 1e-4 and float(p[4]) > 1 - 1e-4
    assert all(0.05 < float(v) < 0.95 for v in p[1:4]) and float(p[2]) == pytest.approx(0.5)
    assert cost_price(evidence, cost, 0.4) == pytest.approx(0.95)  # midway between 0.9 and 1.0


def test_estep_is_soft_near_the_boundary_and_a_group_goes_back_to_the_slab(tmp_path: Path) -> None:
    method = toy_method(tmp_path)
    groups = len(method.groups)
    assert groups == 8 and method.evidence is not None
    base = [50.0] * groups
    base[0], base[1] = 1.0, 1.3  # two expensive conv_a channels with little evidence, close to each other
    set_evidence(method, base, [0.4] * groups)
    method.final_share = 0.2  # under one conv_a channel's share of the MACs (23 %): the cut falls after it
    p, _ = method._evidence_posterior(epoch=5)
    assert float(p[0]) < 0.5 and all(float(v) > 0.999 for v in p[2:])
    assert 0.05 < float(p[0]) < 0.5 < float(p[1]) < 0.95  # the chain cannot tell them apart for sure
    flipped = list(base)
    flipped[0] = 80.0  # the evidence changes: group 0 now matters
    set_evidence(method, flipped, [0.4] * groups)
    q, _ = method._evidence_posterior(epoch=5)
    assert float(q[0]) > 0.5 and float(q[1]) < 0.5
    hard = toy_method(tmp_path, estep="hard")
    set_evidence(hard, base, [0.4] * groups)
    hard.final_share = 0.2
    h, _ = hard._evidence_posterior(epoch=5)
    assert torch.equal(h, (p > 0.5).float())


def test_cost_aware_selection_removes_the_expensive_useless_group(tmp_path: Path) -> None:
    """conv_b channel 0 is cheap and carries little evidence, conv_a channel 0 is expensive with twice that
    evidence: per unit of cost conv_a's is the one not worth keeping, and removing it alone meets the target."""
    model, example = Toy(), torch.zeros(1, 3, 16, 16)
    groups = build_groups(model, example)
    cost = groups.costs("macs")
    evidence = torch.full((len(groups),), 1000.0, dtype=torch.float64)
    a0, b0 = 0, 4  # conv_a is the first layer: groups 0-3; conv_b groups 4-7
    assert groups.layers == ["conv_a", "conv_b"] and float(cost[a0]) > 5 * float(cost[b0])
    evidence[b0], evidence[a0] = 1.0, 2.0
    target = 0.9 * float(cost[a0] / cost.sum())
    pruned = select_for_target(model, groups, evidence / cost, target, "macs", example, 1)
    assert pruned.nonzero().squeeze(1).tolist() == [a0]
    by_evidence_alone = select_for_target(model, groups, evidence, target, "macs", example, 1)
    assert bool(by_evidence_alone[b0])  # what ignoring the cost would have removed first


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The quickstart with the evidence rule, and the same run with the spike's decay monkeypatched away."""
    out = tmp_path_factory.mktemp("runs")
    shrunk: dict[str, list[float]] = {"spike": [], "none": []}
    original_prune = EMMCMCMethod._prune

    def recording_prune(label: str):  # type: ignore[no-untyped-def]
        def prune(self: EMMCMCMethod, pruned: torch.Tensor, *args: object, **kw: object) -> list:
            newly = pruned & ~self.pruned
            shrunk[label].append(float(self.groups.statistic().cpu()[newly].mean()))
            return original_prune(self, pruned, *args, **kw)
        return prune

    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EMMCMCMethod, "_prune", recording_prune("spike"))
        runs["spike"] = run(load_recipe(QUICKSTART, EVIDENCE), out_dir=out / "spike")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EMMCMCMethod, "_prune", recording_prune("none"))
        patch.setattr(emmcmc_module, "group_decay", lambda p, slab, spike: torch.zeros_like(p))
        runs["none"] = run(load_recipe(QUICKSTART, EVIDENCE), out_dir=out / "none")
    return {**runs, "shrunk": shrunk}  # type: ignore[dict-item]


def test_spike_shrinks_the_groups_before_they_are_removed(quickstart_runs: dict) -> None:
    shrunk = quickstart_runs["shrunk"]
    # the statistic of the removed groups (BatchNorm gamma^2 + beta^2, 0.5 for a fresh channel) at removal
    assert shrunk["spike"] and shrunk["none"]
    assert shrunk["spike"][0] < 0.05 * shrunk["none"][0], shrunk
    a = json.loads((quickstart_runs["spike"] / "summary.json").read_text())
    b = json.loads((quickstart_runs["none"] / "summary.json").read_text())
    assert a["accuracy"] != b["accuracy"] or a["nll"] != b["nll"]


def test_removal_costs_under_two_points_on_the_quickstart(quickstart_runs: dict) -> None:
    records = [json.loads(line) for line in (quickstart_runs["spike"] / "metrics.jsonl").read_text().splitlines()]
    (removal,) = [r for r in records if r["event"] == "pruned"]
    assert removal["accuracy_before"] - removal["accuracy_after"] < 0.02, removal
    summary = json.loads((quickstart_runs["spike"] / "summary.json").read_text())
    assert summary["removal_accuracy_before"] == removal["accuracy_before"]
    esteps = [r for r in records if r["event"] == "estep" and r["rule"] == "evidence"]
    assert any(r["uncertain"] > 0 for r in esteps)  # p* is not 0/1 for every group
    reduction = 1 - summary["macs"] / summary["macs_dense"]
    assert 0.5 <= reduction <= 0.515


def test_auto_rule_takes_each_benchmarks_winner(tmp_path: Path) -> None:
    """Under a target the paper's rule won the CIFAR benchmark; without one the evidence rule won variable
    selection (benchmarks/RESULTS.md)."""
    with_target = toy_method(tmp_path, rule="auto")
    assert with_target.rule == "paper" and with_target.evidence is None
    model = Toy()
    ctx = TrainContext(model=model, n_train=1000, steps_per_epoch=10, epochs=8, device=torch.device("cpu"),
                       example_input=torch.zeros(1, 3, 16, 16), classifier_name="fc", run_dir=tmp_path,
                       prune=PruneConfig())
    without = EMMCMCMethod(EMMCMCConfig(), ctx)
    assert without.rule == "evidence" and without.evidence is not None
