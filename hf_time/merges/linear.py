"""Linear merge (weight averaging, model soup): θ = Σ w_i θ_i / Σ w_i.

Paper: Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves accuracy
without increasing inference time", ICML 2022, https://arxiv.org/abs/2203.05482

The base is not used. Defaults are mergekit's ``linear`` (weight 1 per expert, ``normalize: true``),
which makes the default a uniform soup; TIME's weight averaging of two models with w = 0.5 is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from hf_time.errors import ConfigError
from hf_time.merges.kernels import DIVISOR_EPS, weighted_sum
from hf_time.merges.registry import TensorContext, param, register


@dataclass(frozen=True)
class LinearConfig:
    normalize: bool = param(True, "divide the weighted sum by the sum of the weights")


@register(
    "linear",
    kind="dense",
    config=LinearConfig,
    paper="https://arxiv.org/abs/2203.05482",
    uses_base=False,
    min_experts=1,
    native_inputs=True,
    elementwise=True,
)
def linear(base: Tensor | None, experts: Sequence[Tensor], config: LinearConfig, ctx: TensorContext) -> Tensor:
    """Weighted average of the experts (model soup); the base is ignored.

    Raises:
        ConfigError: ``normalize`` with weights summing to 0.
    """
    weights = ctx.weights
    if len(weights) != len(experts):
        raise ValueError(f"{ctx.name}: got {len(weights)} weights for {len(experts)} experts")
    total = 1.0
    if config.normalize:
        total = float(sum(weights))
        if abs(total) < DIVISOR_EPS:
            raise ConfigError(f"linear merge of {ctx.name}: the weights sum to 0; set normalize=false or change them")
    # Accumulate instead of stacking: one float32 buffer whatever the number of experts or their dtype.
    return weighted_sum(experts, [w / total for w in weights])
