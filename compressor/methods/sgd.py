"""Dense baseline: SGD with (Nesterov) momentum, weight decay and a cosine/step/constant schedule."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from compressor.config import Section
from compressor.methods.base import Method, TrainContext, param_groups, register_method
from compressor.methods.schedule import step_size


class SGDConfig(Section):
    """Dense baseline: SGD with momentum and a cosine or step schedule."""

    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    decay_bn: bool = Field(False, description="apply weight decay to BatchNorm and bias parameters")


@register_method
class SGDMethod(Method):
    config = SGDConfig
    cfg: SGDConfig

    def __init__(self, cfg: SGDConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        groups = param_groups(ctx.model, decay_bn=cfg.decay_bn, decayed={"weight_decay": cfg.weight_decay},
                              exempt={"weight_decay": 0.0})
        self.optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, foreach=True
        )

    def lr_at(self, global_step: int) -> float:
        cfg, ctx = self.cfg, self.ctx
        return step_size(cfg.schedule, cfg.lr, global_step, ctx.total_steps, ctx.steps_per_epoch,
                         milestones=cfg.milestones, gamma=cfg.gamma)
