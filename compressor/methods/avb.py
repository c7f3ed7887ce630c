"""`avb`: the adaptive variational-Bayes optimizer (preconditioned SGHMC, docs/algorithm.md#1-the-optimizer-adaptive-sghmc)
as a dense method, with posterior samples collected at the end of each cycle for Bayesian model averaging
(the mean of the samples' softmax, docs/algorithm.md#5-posterior-samples-and-bma)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from torch import Tensor

from compressor.bayes import AdaptiveSGHMC
from compressor.config import Section
from compressor.events import Event, SampleCollected
from compressor.methods.base import Method, Predict, TrainContext, param_groups, register_method
from compressor.methods.schedule import cycle_of, is_sample_epoch, step_size
from compressor.metrics import classification_metrics
from compressor.storage.checkpoint import atomic_torch_save

Temperature = float | Literal["1/N", "1/sqrt(N)"]


class AVBConfig(Section):
    """Adaptive variational-Bayes optimizer = preconditioned SGHMC."""

    name: Literal["avb"] = "avb"
    lr: float = Field(0.2, gt=0, description="C2_0, the step-size schedule's base; tau starts at 1/2, so 0.2 "
                      "steps like SGD at lr 0.1")
    beta1: float = Field(0.9, ge=0, lt=1, description="momentum retention (paper default 0.1)")
    beta2: float = Field(1.0, gt=0)
    nesterov: bool = Field(True, description="step from the look-ahead point, as Nesterov SGD (paper: off)")
    eta: float = Field(0.1, gt=0, description="mirror-descent rate of the preconditioner")
    weight_decay: float = Field(5e-4, ge=0, description="lambda1, slab precision per datum")
    temperature: Temperature = Field("1/N", description="1/N (cold), 1/sqrt(N) or a number")
    schedule: Literal["cyclical", "cosine", "constant"] = "cyclical"
    cycles: int = Field(1, ge=1)
    samples_per_cycle: int = Field(1, ge=0, description="posterior samples = last epochs of each cycle")
    prior_on_bn: bool = Field(False, description="also put prior and noise on BatchNorm/bias parameters")
    fused: Literal[True, False, "auto"] = Field(False, description="one-pass compiled optimizer step (true: everywhere, "
                                          "after a one-off compile of about a minute; auto: CUDA only, unverified)")

    @field_validator("temperature")
    @classmethod
    def _positive(cls, v: Temperature) -> Temperature:
        if isinstance(v, float) and v <= 0:
            raise ValueError("temperature must be positive, '1/N' or '1/sqrt(N)'")
        return v


@register_method
class AVBMethod(Method):
    config = AVBConfig
    cfg: AVBConfig

    def __init__(self, cfg: AVBConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        groups = param_groups(ctx.model, decay_bn=cfg.prior_on_bn, decayed={},
                              exempt={"weight_decay": 0.0, "noise": False})
        self.optimizer = AdaptiveSGHMC(groups, n_data=ctx.n_train, lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2,
                                       eta=cfg.eta, weight_decay=cfg.weight_decay, temperature=cfg.temperature,
                                       seed=ctx.seed, nesterov=cfg.nesterov, fused=cfg.fused)
        self.samples = 0
        self.prob_sum: Tensor | None = None

    def lr_at(self, global_step: int) -> float:
        ctx = self.ctx
        return step_size(self.cfg.schedule, self.cfg.lr, global_step, ctx.total_steps, ctx.steps_per_epoch,
                         cycles=self.cfg.cycles)

    def collecting(self, epoch: int) -> bool:
        return is_sample_epoch(epoch, self.ctx.epochs, self.cfg.cycles, self.cfg.samples_per_cycle)

    def on_epoch_end(self, epoch: int, global_step: int, predict: Predict) -> tuple[dict | None, list[Event]]:
        if not self.collecting(epoch):
            return None, []
        probs, labels = predict()
        self.prob_sum = probs.clone() if self.prob_sum is None else self.prob_sum + probs
        self.samples += 1
        folder = self.ctx.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        atomic_torch_save({"model": self.ctx.model.state_dict(), "epoch": epoch + 1},
                          folder / f"sample-{self.samples:03d}.pt")
        bma = classification_metrics(self.prob_sum / self.samples, labels)
        bma["samples"] = self.samples
        return bma, [SampleCollected(epoch=epoch + 1, samples=self.samples, bma=bma)]

    def diagnostics(self) -> dict[str, float]:
        diag = self.optimizer.diagnostics()
        step = min(int(self.optimizer.steps), self.ctx.total_steps - 1)
        diag["cycle"] = float(cycle_of(max(0, step), self.ctx.total_steps, self.cfg.cycles) + 1)
        diag["samples"] = float(self.samples)
        return diag

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["samples"] = self.samples
        if self.prob_sum is not None:
            state["prob_sum"] = self.prob_sum
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.samples = int(state.get("samples", 0))
        self.prob_sum = state.get("prob_sum")
