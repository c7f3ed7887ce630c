"""`emmcmc`: the avb sampler plus a spike-and-slab prior on coupled channel groups, whose E-step moves each group
between slab (small decay) and spike (large decay) and removes spiked groups for good: training and structured
pruning in one run (docs/algorithm.md, sections 3 and 4).

Two E-step rules (`method.rule`; `auto`, the default, takes each benchmark's winner: `paper` under a target,
`evidence` without one, benchmarks/RESULTS.md):
- `evidence` (with `prune.target`): each group's evidence is the chain's estimate of the training loss its
  removal would cost (`methods/evidence.py`), weighed against what it costs (MACs or params); p*_g is the
  probability, under the chain's spread of that estimate, that the group is worth its cost at the price that
  spikes the ramp's share of the cost. The spike's pull grows over the ramp, and at the target epoch the
  lowest evidence-per-cost groups go (the same measured-cost selection as the one-shot baselines).
- `evidence` without a target: each group against the Occam factor of its weights (variable selection).
- `paper`: the paper's log-odds of the two Gaussians on the group statistic (BatchNorm scale), with pi set so
  the smallest log-odds up to the ramp's share go to the spike.

Either way the spiked share ramps linearly from the schedule's start to its target epoch, the removal at the
target epoch is chosen on the *measured* shrunk network, and after it every live group is slab: the per-group
cost estimates overlap, so a held share would otherwise keep spiking live groups and cut past the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from compressor.bayes import (
    cost_price,
    evidence_slab_probability,
    group_decay,
    hard_slab,
    pi_for_budget,
    ramp,
    slab_probability,
    update_pi,
)
from compressor.config import EpochSpec, Section, resolve_epoch
from compressor.events import EStep, Event, Log
from compressor.methods.avb import AVBConfig, AVBMethod
from compressor.methods.base import Predict, TrainContext, pruned_event, register_method
from compressor.methods.evidence import ChainEvidence
from compressor.prune import bisect_share, build_groups, land_on_target, reduction_of, select_for_target
from compressor.prune.budget import lowest_first


class EMMCMCConfig(AVBConfig):
    """The avb optimizer plus the spike-and-slab group prior with E-step and hard pruning."""

    name: Literal["emmcmc"] = "emmcmc"  # type: ignore[assignment]
    rule: Literal["auto", "evidence", "paper"] = Field(
        "auto", description="E-step: `evidence` (the chain's evidence per unit of cost, or against the Occam factor "
        "without a target), `paper` (the paper's BatchNorm-scale log-odds), `auto` (the benchmarks' winners: "
        "paper under a prune.target, evidence without one)")
    lambda0: float = Field(0.05, gt=0, description="spike precision per datum (large decay)")
    commit_pull: float = Field(10.0, ge=1, description="evidence rule: the spike's strength, in lambda0, on the "
                               "groups committed to removal during the epoch before it (they reach ~0 first)")
    pi: float = Field(0.5, gt=0, lt=1, description="prior slab probability")
    update_pi: bool = Field(False, description="pi <- mean of the slab probabilities after each E-step")
    estep: Literal["soft", "hard"] = "soft"
    warmup_epochs: EpochSpec = Field(1, description="E-steps start after this many epochs (or this fraction "
                                     "of the run)")
    estep_every: int | None = Field(None, gt=0, description="E-step every K steps (None: each epoch)")

    @model_validator(mode="after")
    def _spike_larger(self) -> EMMCMCConfig:
        if self.lambda0 <= self.weight_decay:
            raise ValueError("lambda0 (spike) must be larger than weight_decay (slab)")
        return self


@register_method
class EMMCMCMethod(AVBMethod):
    config = EMMCMCConfig
    kind = "structured"
    cfg: EMMCMCConfig

    @classmethod
    def default_start(cls, cfg: Section) -> float:
        assert isinstance(cfg, EMMCMCConfig)
        return cfg.warmup_epochs

    def __init__(self, cfg: EMMCMCConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        self.prune_cfg = ctx.prune
        self.groups = build_groups(ctx.model, ctx.example_input, ctx.prune.granularity)
        self.pruned = torch.zeros(len(self.groups), dtype=torch.bool)
        self.logit_pi = float(torch.logit(torch.tensor(cfg.pi, dtype=torch.float64)))
        schedule = self.schedule(cfg, ctx.prune, ctx.epochs)
        self.start_epoch, self.target_epoch = schedule.start_epoch, schedule.target_epoch
        self.warmup = resolve_epoch(cfg.warmup_epochs, ctx.epochs)
        self.removed_for_target = False
        self.final_share: float | None = None
        self.removal_accuracy: list[float] = []  # [before, after] the target's removal, when measured
        self.committed: Tensor | None = None  # evidence rule: the removal set, chosen the epoch before it
        self.evidence: ChainEvidence | None = None
        self.inclusion_sum: Tensor | None = None  # p* summed over the posterior samples' epochs
        self.inclusion_count = 0
        self.rule = cfg.rule if cfg.rule != "auto" else ("paper" if ctx.prune.target is not None else "evidence")
        if self.rule == "evidence" and (ctx.prune.target is None or self.groups.removable):
            batch = max(1, round(ctx.n_train / max(1, ctx.steps_per_epoch)))
            self.evidence = ChainEvidence(self.groups, ctx.n_train, batch)

    # -- E-step -----------------------------------------------------------------------------------------
    def step(self) -> None:
        if self.evidence is not None and not self.removed_for_target:
            self.evidence.observe()
        super().step()

    def on_epoch_start(self, epoch: int, global_step: int) -> list[Event]:
        if self.cfg.estep_every is None and epoch >= self.warmup:
            return self._estep(epoch, global_step)
        return []

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        every = self.cfg.estep_every
        events: list[Event] = []
        if every is not None and epoch >= self.warmup and global_step % every == 0:
            events += self._estep(epoch, global_step)
        if (self.prune_cfg.target is not None and not self.removed_for_target
                and self.target_epoch >= self.ctx.epochs and global_step == self.ctx.total_steps):
            events += self._remove_for_target(epoch, global_step)  # no epoch starts after the target epoch
        return events

    def _estep(self, epoch: int, global_step: int) -> list[Event]:
        cfg, groups = self.cfg, self.groups
        events: list[Event] = []
        if self.prune_cfg.target is not None and epoch >= self.target_epoch and not self.removed_for_target:
            events += self._remove_for_target(epoch, global_step)
        pull = self._pull(epoch)
        if self.evidence is not None and self._commit_epoch(epoch):
            p = self._commit()
            pi = float(p.mean())
            pull = self.cfg.commit_pull
        elif self.evidence is not None:
            p, pi = self._evidence_posterior(epoch)
        else:
            p, pi = self._paper_posterior(epoch)
        if self.prune_cfg.target is not None and self.removed_for_target:
            p = torch.ones_like(p)  # the budget is spent: every live group is slab, none drifts out of it
        p = torch.where(self.pruned.to(p.device), torch.zeros_like(p), p)
        # the decay on top of the slab's weight_decay: the mixed prior precision measured from lambda1
        extra = group_decay(p, 0.0, (cfg.lambda0 - cfg.weight_decay) * pull)
        extra = torch.where(extra < 1e-3 * cfg.weight_decay, torch.zeros_like(extra), extra)  # skip no-ops
        functional = self.evidence is not None  # the paper's form decays every slice
        for param, value in groups.broadcast(extra, combine="sum", fill=0.0, functional=functional).items():
            self.optimizer.set_extra_decay(param, value if bool(value.any()) else None)
        spiked = (p < 0.5).cpu()
        cost = self._costs().cpu()
        unsure = int(((p > 0.05) & (p < 0.95)).sum())
        events.append(EStep(epoch=epoch + 1, global_step=global_step, pi=pi, spiked=int(spiked.sum()),
                            total_groups=len(groups),
                            spike_cost_fraction=float(cost[spiked].sum() / cost.sum().clamp_min(1e-12)),
                            rule="evidence" if self.evidence is not None else "paper", uncertain=unsure))
        collapsed = spiked & (groups.statistic().cpu() < self.prune_cfg.hard_threshold) & ~self.pruned
        if bool(collapsed.any()):
            events += self._prune(self.pruned | collapsed, epoch, global_step, "statistic below hard_threshold")
        return events

    def _commit_epoch(self, epoch: int) -> bool:
        """The evidence rule decides what the target's removal takes one epoch ahead (when the ramp has one)."""
        return (self.prune_cfg.target is not None and not self.removed_for_target
                and epoch == self.target_epoch - 1 and epoch >= self.start_epoch)

    def _commit(self) -> Tensor:
        """Choose the removal set now, on the measured network (the lowest evidence per unit cost, as the
        baselines select), and spike exactly it for the epoch before the removal: p* is 0 there, 1 elsewhere."""
        assert self.evidence is not None
        mean, _ = self.evidence.estimate()
        self.evidence.reset()
        self.committed = self._select_by_evidence(mean)
        return (~self.committed).float().to(self.groups.device)

    def _select_by_evidence(self, mean: Tensor) -> Tensor:
        cfg = self.prune_cfg
        ratio = (mean / self._costs().cpu()).masked_fill(self.pruned, -float("inf"))
        return select_for_target(self.ctx.model, self.groups, ratio, cfg.target, cfg.target_kind,
                                 self.ctx.example_input, cfg.round_to)

    def _pull(self, epoch: int) -> float:
        """How much of the spike's extra decay acts: the evidence rule grows it over the ramp (a group spiked
        early on thin evidence is pulled gently and can come back), the paper's form applies it whole."""
        if self.evidence is None or self.target_epoch <= self.start_epoch:
            return 1.0
        return min(1.0, (epoch - self.start_epoch + 1) / max(1, self.target_epoch - 1 - self.start_epoch))

    def _paper_posterior(self, epoch: int) -> tuple[Tensor, float]:
        """p* from the two Gaussians on the group statistic, pi set by the budget's ramp; returns (p*, pi)."""
        cfg, n = self.cfg, self.ctx.n_train
        s, m = self.groups.statistic(), self.groups.sizes()
        if self.prune_cfg.target is not None:
            if self.final_share is None:
                self.final_share = self._target_family(self._paper_candidates(s, m), s)[0]
            share = ramp(epoch, self.start_epoch, self.target_epoch, self.final_share)
            self.logit_pi = pi_for_budget(s, m, self._costs(), share, n_data=n, lambda1=cfg.weight_decay,
                                          lambda0=cfg.lambda0).logit_pi
        posterior = hard_slab if cfg.estep == "hard" else slab_probability
        p = posterior(s, m, n_data=n, lambda1=cfg.weight_decay, lambda0=cfg.lambda0, logit_pi=self.logit_pi).float()
        if cfg.update_pi and self.prune_cfg.target is None:
            pi = min(max(update_pi(p), 1e-6), 1 - 1e-6)
            self.logit_pi = float(torch.logit(torch.tensor(pi, dtype=torch.float64)))
        return p, float(torch.sigmoid(torch.tensor(self.logit_pi)))

    def _evidence_posterior(self, epoch: int) -> tuple[Tensor, float]:
        """p*_g = P(evidence_g > price * cost_g) under the chain's estimate since the last E-step, the price
        chosen so the lowest evidence-per-cost groups up to the ramp's share are spiked; returns (p*, mean p*)."""
        assert self.evidence is not None
        mean, stderr = self.evidence.estimate()
        self.evidence.reset()
        if self.prune_cfg.target is None:
            return self._occam_posterior(mean, stderr)
        cost = self._costs().cpu()
        if self.final_share is None:
            self.final_share = self._target_family(self._ratio_candidates(mean), mean / cost)[0]
        # the whole share is spiked one epoch before the removal, so every group removed has felt the spike
        share = ramp(epoch, self.start_epoch, max(self.start_epoch, self.target_epoch - 1), self.final_share)
        price = cost_price(mean, cost, share)
        p = evidence_slab_probability(mean, stderr, cost, price)
        if self.cfg.estep == "hard":
            p = (p > 0.5).float()
        return p.to(self.groups.device), float(p.mean())

    def _occam_posterior(self, mean: Tensor, stderr: Tensor) -> tuple[Tensor, float]:
        """Without a target the price of a group is the Occam factor of its weights: a group is worth keeping
        when removing it would cost the training set more than (1/2) k ln N nats (k its parameters, the
        Laplace/BIC approximation of the marginal likelihood), so p*_g = P(evidence_g > (1/2) k_g ln N)."""
        params = self.groups.costs("params").cpu()
        occam = 0.5 * params * math.log(self.ctx.n_train)
        p = evidence_slab_probability(mean - occam, stderr, torch.zeros_like(occam), 0.0)
        if self.cfg.estep == "hard":
            p = (p > 0.5).float()
        return p.to(self.groups.device), float(p.mean())

    def _costs(self) -> Tensor:
        kind = self.prune_cfg.target_kind if self.groups.removable else "params"
        return self.groups.costs(kind)

    # -- hard pruning -----------------------------------------------------------------------------------
    def _paper_candidates(self, s: Tensor, m: Tensor) -> Callable[[float], Tensor]:
        def candidate(share: float) -> Tensor:
            choice = pi_for_budget(s, m, self._costs(), share, n_data=self.ctx.n_train,
                                   lambda1=self.cfg.weight_decay, lambda0=self.cfg.lambda0)
            p = slab_probability(s, m, n_data=self.ctx.n_train, lambda1=self.cfg.weight_decay,
                                 lambda0=self.cfg.lambda0, logit_pi=choice.logit_pi)
            return self._round((p < 0.5).cpu() | self.pruned, s)

        return candidate

    def _ratio_candidates(self, evidence: Tensor) -> Callable[[float], Tensor]:
        ratio = (evidence.double() / self._costs().cpu()).masked_fill(self.pruned, -float("inf"))
        kind = self.prune_cfg.target_kind
        return lowest_first(self.groups, ratio, kind, self.prune_cfg.round_to)

    def _round(self, pruned: Tensor, s: Tensor) -> Tensor:
        """Widths kept whole (`prune.round_to`) by restoring the strongest candidates, never a removed group."""
        if not self.groups.removable:
            return pruned
        score = s.detach().cpu().double().masked_fill(self.pruned, -float("inf"))
        return self.groups.round_kept(pruned, score, self.prune_cfg.round_to) | self.pruned

    def _target_family(self, candidate: Callable[[float], Tensor], score: Tensor) -> tuple[float, Tensor]:
        """Smallest share of `candidate`'s family whose removal cuts the *measured* MACs/params by the target,
        and the set to remove: that member, or one landing closer to the target (`land_on_target`)."""
        cfg = self.prune_cfg
        reduction = reduction_of(self.ctx.model, self.groups, cfg.target_kind, self.ctx.example_input)
        share, over, under = bisect_share(candidate, reduction, cfg.target)
        keep = score.detach().cpu().double().masked_fill(self.pruned, -float("inf"))
        return share, land_on_target(self.groups, under, over, keep, reduction, cfg.target, cfg.round_to)

    def _remove_for_target(self, epoch: int, global_step: int) -> list[Event]:
        self.removed_for_target = True
        cfg = self.prune_cfg
        if self.committed is not None:
            spiked = self.committed
        elif self.evidence is not None:
            spiked = self._select_by_evidence(self.evidence.estimate()[0])
        else:
            s, m = self.groups.statistic(), self.groups.sizes()
            self.final_share, spiked = self._target_family(self._paper_candidates(s, m), s)
        return self._prune(spiked, epoch, global_step, f"target {cfg.target:.0%} of {cfg.target_kind} reached",
                           measure=True)

    def on_epoch_end(self, epoch: int, global_step: int, predict: Predict) -> tuple[dict | None, list[Event]]:
        """Posterior samples as avb collects them; without a target, each sample epoch also adds the evidence
        rule's p* to the posterior inclusion probabilities (their average over the samples)."""
        if self.evidence is not None and self.prune_cfg.target is None and self.collecting(epoch):
            mean, stderr = self.evidence.estimate()
            p = self._occam_posterior(mean, stderr)[0].cpu().double()
            p = torch.where(self.pruned, torch.zeros_like(p), p)
            self.inclusion_sum = p if self.inclusion_sum is None else self.inclusion_sum + p
            self.inclusion_count += 1
        return super().on_epoch_end(epoch, global_step, predict)

    def collecting(self, epoch: int) -> bool:
        """With a budget, samples start once the target's groups are gone: all samples share one architecture."""
        waiting = self.prune_cfg.target is not None and not self.removed_for_target
        return not waiting and super().collecting(epoch)

    def _drop_samples(self) -> list[Event]:
        """Samples taken before a removal hold weights in now-removed channels: restart the BMA without them."""
        if self.samples == 0:
            return []
        for path in (self.ctx.run_dir / "samples").glob("sample-*.pt"):
            path.unlink()
        dropped, self.samples, self.prob_sum = self.samples, 0, None
        return [Log(level="info", message=f"BMA restarted: {dropped} sample(s) from before the removal dropped")]

    def _prune(self, pruned: Tensor, epoch: int, global_step: int, reason: str, measure: bool = False) -> list[Event]:
        """Remove `pruned` for good; with `measure`, the evaluation accuracy just before and after is recorded
        (what the removal itself costs: near nothing when the spike had already shrunk the groups)."""
        pruned = self._round(pruned | self.pruned, self.groups.statistic())
        newly = int((pruned & ~self.pruned).sum())
        if newly == 0:
            return []
        before = self.ctx.evaluate() if measure and self.ctx.evaluate is not None else None
        self.pruned = pruned
        self._apply_masks()
        after = self.ctx.evaluate() if before is not None and self.ctx.evaluate is not None else None
        event = pruned_event(self.groups, pruned, newly, epoch, global_step, reason)
        event.accuracy_before, event.accuracy_after = before, after
        if before is not None and after is not None:
            self.removal_accuracy = [before, after]
        return self._drop_samples() + [event]

    def _apply_masks(self) -> None:
        self.groups.zero_(self.pruned)
        keep = (~self.pruned).float()
        for param, mask in self.groups.broadcast(keep, combine="prod", fill=1.0).items():
            self.optimizer.set_keep_mask(param, mask if bool((mask == 0).any()) else None)

    # -- reporting and persistence ----------------------------------------------------------------------
    def summary_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pruned_groups": int(self.pruned.sum()), "total_groups": len(self.groups),
                               "granularity": self.groups.granularity}
        if self.removal_accuracy:
            out["removal_accuracy_before"], out["removal_accuracy_after"] = self.removal_accuracy
        if self.inclusion_sum is not None:
            out["inclusion_probability"] = (self.inclusion_sum / self.inclusion_count).tolist()
        if self.groups.granularity == "feature":
            out["selected_features"] = [self.groups.feature_index(g) for g in range(len(self.groups))
                                        if not bool(self.pruned[g])]
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(logit_pi=self.logit_pi, removed_for_target=self.removed_for_target,
                     final_share=-1.0 if self.final_share is None else self.final_share,
                     removal_accuracy=list(self.removal_accuracy), inclusion_count=self.inclusion_count)
        if self.inclusion_sum is not None:
            state["inclusion_sum"] = self.inclusion_sum.clone()
        if self.committed is not None:
            state["committed"] = self.committed.clone()
        if self.evidence is not None:
            state["evidence"] = self.evidence.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.logit_pi = float(state["logit_pi"])
        self.removed_for_target = bool(state["removed_for_target"])
        self.final_share = None if state["final_share"] < 0 else float(state["final_share"])
        self.removal_accuracy = [float(a) for a in state.get("removal_accuracy", [])]
        self.committed = state["committed"].clone() if "committed" in state else None
        self.inclusion_count = int(state.get("inclusion_count", 0))
        self.inclusion_sum = state["inclusion_sum"].clone() if "inclusion_sum" in state else None
        if self.evidence is not None and "evidence" in state:
            self.evidence.load_state_dict(state["evidence"])
        if bool(self.pruned.any()):
            self._apply_masks()
