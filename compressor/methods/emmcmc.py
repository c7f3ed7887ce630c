"""`emmcmc`: the avb sampler plus a spike-and-slab prior on coupled channel groups, whose E-step moves each group
between slab (small decay) and spike (large decay) and removes collapsed groups for good: training and
structured pruning in one run (docs/algorithm.md, sections 3 and 4).

Budget control (`prune.target`): the spiked share of the cost ramps linearly from the schedule's start to its
target epoch; at each E-step pi is set (pi_for_budget) so exactly the groups with the smallest log-odds up to
that share go to the spike. At the target epoch the spiked groups are removed, with the share chosen by
bisection on the *measured* MACs/params of the shrunk network, so the target is met on the real network rather
than on the (overlapping) per-group cost estimates. After that every live group is slab: the per-group cost
estimates overlap, so the held share would otherwise keep spiking live groups and cut past the target.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from compressor.bayes import group_decay, hard_slab, pi_for_budget, ramp, slab_probability, update_pi
from compressor.config import Section
from compressor.events import EStep, Event, Log
from compressor.methods.avb import AVBConfig, AVBMethod
from compressor.methods.base import TrainContext, pruned_event, register_method
from compressor.prune import bisect_share, build_groups, land_on_target, reduction_of


class EMMCMCConfig(AVBConfig):
    """The avb optimizer plus the spike-and-slab group prior with E-step and hard pruning."""

    name: Literal["emmcmc"] = "emmcmc"  # type: ignore[assignment]
    lambda0: float = Field(0.05, gt=0, description="spike precision per datum (large decay)")
    pi: float = Field(0.5, gt=0, lt=1, description="prior slab probability")
    update_pi: bool = Field(False, description="pi <- mean of the slab probabilities after each E-step")
    estep: Literal["soft", "hard"] = "soft"
    warmup_epochs: int = Field(1, ge=0, description="E-steps start after this many epochs")
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
    def default_start(cls, cfg: Section) -> int:
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
        self.removed_for_target = False
        self.final_share: float | None = None

    # -- E-step -----------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, global_step: int) -> list[Event]:
        if self.cfg.estep_every is None and epoch >= self.cfg.warmup_epochs:
            return self._estep(epoch, global_step)
        return []

    def after_step(self, epoch: int, global_step: int) -> list[Event]:
        every = self.cfg.estep_every
        if every is not None and epoch >= self.cfg.warmup_epochs and global_step % every == 0:
            return self._estep(epoch, global_step)
        return []

    def _estep(self, epoch: int, global_step: int) -> list[Event]:
        cfg, groups = self.cfg, self.groups
        s, m = groups.statistic(), groups.sizes()
        n = self.ctx.n_train
        events: list[Event] = []
        target = self.prune_cfg.target
        if target is not None:
            if epoch >= self.target_epoch and not self.removed_for_target:
                events += self._remove_for_target(s, m, epoch, global_step)
                s = groups.statistic()
            if self.final_share is None:
                self.final_share = self._share_for_target(s, m)[0]
            share = ramp(epoch, self.start_epoch, self.target_epoch, self.final_share)
            choice = pi_for_budget(s, m, self._costs(), share, n_data=n, lambda1=cfg.weight_decay,
                                   lambda0=cfg.lambda0)
            self.logit_pi = choice.logit_pi
        posterior = hard_slab if cfg.estep == "hard" else slab_probability
        p = posterior(s, m, n_data=n, lambda1=cfg.weight_decay, lambda0=cfg.lambda0, logit_pi=self.logit_pi).float()
        if cfg.update_pi and target is None:
            pi = min(max(update_pi(p), 1e-6), 1 - 1e-6)
            self.logit_pi = float(torch.logit(torch.tensor(pi, dtype=torch.float64)))
        if target is not None and self.removed_for_target:
            p = torch.ones_like(p)  # the budget is spent: every live group is slab, none drifts out of it
        p = torch.where(self.pruned.to(p.device), torch.zeros_like(p), p)
        # the decay on top of the slab's weight_decay: the mixed prior precision measured from lambda1
        extra = group_decay(p, 0.0, cfg.lambda0 - cfg.weight_decay)
        extra = torch.where(extra < 1e-3 * cfg.weight_decay, torch.zeros_like(extra), extra)  # skip no-ops
        for param, value in groups.broadcast(extra, combine="sum", fill=0.0).items():
            self.optimizer.set_extra_decay(param, value if bool(value.any()) else None)
        spiked = (p < 0.5).cpu()
        cost = self._costs().cpu()
        events.append(EStep(epoch=epoch + 1, global_step=global_step,
                            pi=float(torch.sigmoid(torch.tensor(self.logit_pi))), spiked=int(spiked.sum()),
                            total_groups=len(groups),
                            spike_cost_fraction=float(cost[spiked].sum() / cost.sum().clamp_min(1e-12))))
        collapsed = spiked & (s.cpu() < self.prune_cfg.hard_threshold) & ~self.pruned
        if bool(collapsed.any()):
            events += self._prune(self.pruned | collapsed, epoch, global_step, "statistic below hard_threshold")
        return events

    def _costs(self) -> Tensor:
        kind = self.prune_cfg.target_kind if self.groups.removable else "params"
        return self.groups.costs(kind)

    # -- hard pruning -----------------------------------------------------------------------------------
    def _spike_set(self, s: Tensor, m: Tensor, share: float) -> Tensor:
        choice = pi_for_budget(s, m, self._costs(), share, n_data=self.ctx.n_train,
                               lambda1=self.cfg.weight_decay, lambda0=self.cfg.lambda0)
        p = slab_probability(s, m, n_data=self.ctx.n_train, lambda1=self.cfg.weight_decay,
                             lambda0=self.cfg.lambda0, logit_pi=choice.logit_pi)
        spiked = (p < 0.5).cpu() | self.pruned
        return self._round(spiked, s)

    def _round(self, pruned: Tensor, s: Tensor) -> Tensor:
        """Widths kept whole (`prune.round_to`) by restoring the strongest candidates, never a removed group."""
        if not self.groups.removable:
            return pruned
        score = s.detach().cpu().double().masked_fill(self.pruned, -float("inf"))
        return self.groups.round_kept(pruned, score, self.prune_cfg.round_to) | self.pruned

    def _share_for_target(self, s: Tensor, m: Tensor) -> tuple[float, Tensor]:
        """Smallest spiked cost share whose removal cuts the *measured* MACs/params by the target, and the set
        to remove: that share's spike set, or one landing closer to the target (`land_on_target`)."""
        cfg = self.prune_cfg
        reduction = reduction_of(self.ctx.model, self.groups, cfg.target_kind, self.ctx.example_input)
        share, over, under = bisect_share(lambda share: self._spike_set(s, m, share), reduction, cfg.target)
        score = s.detach().cpu().double().masked_fill(self.pruned, -float("inf"))
        return share, land_on_target(self.groups, under, over, score, reduction, cfg.target, cfg.round_to)

    def _remove_for_target(self, s: Tensor, m: Tensor, epoch: int, global_step: int) -> list[Event]:
        self.removed_for_target = True
        share, spiked = self._share_for_target(s, m)
        self.final_share = share
        reason = f"target {self.prune_cfg.target:.0%} of {self.prune_cfg.target_kind} reached"
        return self._prune(spiked, epoch, global_step, reason)

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

    def _prune(self, pruned: Tensor, epoch: int, global_step: int, reason: str) -> list[Event]:
        pruned = self._round(pruned | self.pruned, self.groups.statistic())
        newly = int((pruned & ~self.pruned).sum())
        if newly == 0:
            return []
        self.pruned = pruned
        self._apply_masks()
        return self._drop_samples() + [pruned_event(self.groups, pruned, newly, epoch, global_step, reason)]

    def _apply_masks(self) -> None:
        self.groups.zero_(self.pruned)
        keep = (~self.pruned).float()
        for param, mask in self.groups.broadcast(keep, combine="prod", fill=1.0).items():
            self.optimizer.set_keep_mask(param, mask if bool((mask == 0).any()) else None)

    # -- reporting and persistence ----------------------------------------------------------------------
    def summary_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pruned_groups": int(self.pruned.sum()), "total_groups": len(self.groups),
                               "granularity": self.groups.granularity}
        if self.groups.granularity == "feature":
            out["selected_features"] = [self.groups.feature_index(g) for g in range(len(self.groups))
                                        if not bool(self.pruned[g])]
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(logit_pi=self.logit_pi, removed_for_target=self.removed_for_target,
                     final_share=-1.0 if self.final_share is None else self.final_share)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.logit_pi = float(state["logit_pi"])
        self.removed_for_target = bool(state["removed_for_target"])
        self.final_share = None if state["final_share"] < 0 else float(state["final_share"])
        if bool(self.pruned.any()):
            self._apply_masks()
