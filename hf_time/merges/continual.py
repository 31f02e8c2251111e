"""Continual baselines of sequential merging: continual task arithmetic and continual averaging.

Paper: Tang et al., "Merging Models on the Fly Without Retraining: A Sequential Approach to Scalable
Continual Model Merging" (OPCM), 2025, https://arxiv.org/abs/2501.09522 — where both are the
baselines OPCM is compared with. They are the sequential forms of task arithmetic (Ilharco et al.,
https://arxiv.org/abs/2212.04089) and of the uniform model soup.

* ``continual_task_arithmetic``: θ^(0) = θ_0, θ^(t) = θ^(t−1) + λ·τ_t. λ = 0.3 is FusionBench's
  ``scaling_factor`` (``config/method/opcm/task_arithmetic.yaml``); after T steps this is the one-shot
  task arithmetic θ_0 + λ·Σ τ_t.
* ``continual_average``: θ^(1) = θ_1, θ^(t) = ((t−1)·θ^(t−1) + θ_t)/t, the running mean of the experts
  (θ_0 is not part of it), as FusionBench's ``ContinualWeightAverageForCLIP``.

Sequential contract: :class:`hf_time.merges.registry.SequentialMethod`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register

PAPER = "https://arxiv.org/abs/2501.09522"


@dataclass(frozen=True)
class ContinualTaskArithmeticConfig:
    lambda_: float = param(0.3, "scale of each new task vector (FusionBench's continual baseline: 0.3)", alias="lambda")


@register("continual_task_arithmetic", kind="sequential", config=ContinualTaskArithmeticConfig, paper=PAPER)
def continual_task_arithmetic(previous: Tensor | None, base: Tensor, expert: Tensor,
                              config: ContinualTaskArithmeticConfig, ctx: TensorContext,
                              state: Mapping[str, Any]) -> Tensor:
    """Continual task arithmetic: θ^(t) = θ^(t−1) + λ·(θ_t − θ_0), from θ^(0) = θ_0."""
    running = base if previous is None else previous
    return expert.sub(base).mul_(config.lambda_).add_(running)


@dataclass(frozen=True)
class ContinualAverageConfig:
    pass


@register("continual_average", kind="sequential", config=ContinualAverageConfig, paper=PAPER, uses_base=False)
def continual_average(previous: Tensor | None, base: Tensor, expert: Tensor, config: ContinualAverageConfig,
                      ctx: TensorContext, state: Mapping[str, Any]) -> Tensor:
    """Continual averaging: the running mean ((t−1)·θ^(t−1) + θ_t)/t of the experts (θ_0 excluded)."""
    t = int(state["t"])
    if previous is None:  # θ^(1) = θ_1: nothing to average yet
        return expert.clone()
    return previous.mul(t - 1).add_(expert).div_(t)
