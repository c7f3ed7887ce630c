"""Dense baseline: SGD with (Nesterov) momentum, weight decay and a cosine/step/constant schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from compressor.methods.base import Method, TrainContext, register_method, split_decay


def dense_lr(schedule: str, base: float, global_step: int, ctx: TrainContext,
             milestones: list[int] | None = None, gamma: float = 0.1) -> float:
    """Per-step learning rate for the dense schedules shared by SGD-based methods."""
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * global_step / max(1, ctx.total_steps)))
    if schedule == "step":
        epoch = global_step // max(1, ctx.steps_per_epoch)
        return base * gamma ** sum(epoch >= m for m in milestones or [])
    return base


@register_method("sgd")
class SGDMethod(Method):
    def __init__(self, cfg: Any, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        decay, exempt = split_decay(ctx.model, decay_bn=cfg.decay_bn)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if exempt:
            groups.append({"params": exempt, "weight_decay": 0.0})
        self.optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, foreach=True
        )

    def lr_at(self, global_step: int) -> float:
        return dense_lr(self.cfg.schedule, self.cfg.lr, global_step, self.ctx, self.cfg.milestones, self.cfg.gamma)
