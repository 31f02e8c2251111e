"""EMA: the exponential moving average of the experts, TIME's recommended ("Best-in-TIME") merge.

Paper: Dziadzio et al., "How to Merge Your Multimodal Models Over Time?", CVPR 2025,
https://arxiv.org/abs/2412.06712

r_0 = θ_0 and r_t = w·θ_t + (1−w)·r_{t−1}: TIME's "unrolled EMA" with weight averaging of the two
models [θ_t, r_{t−1}]. With the paper's w = 0.5, r_3 = θ_3/2 + θ_2/4 + θ_1/8 + θ_0/8. Only the running
average is kept, so memory does not grow with the number of experts.

The parameter is called ``w`` as in the paper (and methods.md §1); ``weight`` is the name the dense
engine gives to per-expert weights, which a fold does not have. Sequential contract: see
:class:`hf_time.merges.registry.SequentialMethod`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register


@dataclass(frozen=True)
class EMAConfig:
    w: float = param(0.5, "EMA weight of the new expert: r_t = w·θ_t + (1−w)·r_{t−1} (TIME: 0.5)", ge=0.0, le=1.0)


@register("ema", kind="sequential", config=EMAConfig, paper="https://arxiv.org/abs/2412.06712", uses_base=True)
def ema(previous: Tensor | None, base: Tensor, expert: Tensor, config: EMAConfig, ctx: TensorContext,
        state: Mapping[str, Any]) -> Tensor:
    """EMA (TIME): r_t = w·θ_t + (1−w)·r_{t−1}, starting from r_0 = θ_0."""
    running = base if previous is None else previous
    # Written as the paper's formula (not torch.lerp) so w = 0.5 gives exact halvings.
    return expert.mul(config.w).add_(running, alpha=1.0 - config.w)
