"""SLERP: spherical linear interpolation from the base (t = 0) to one expert (t = 1), per tensor.

Reference: Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985;
https://en.wikipedia.org/wiki/Slerp

With Ω the angle between the flattened tensors: θ = sin((1−t)Ω)/sin Ω · θ_0 + sin(tΩ)/sin Ω · θ_1.
As in mergekit, nearly colinear tensors (|cos Ω| > 0.9995, its DOT_THRESHOLD) are linearly
interpolated. A tensor of zero norm has no direction: we lerp there too (mergekit would slerp with
cos Ω = 0, an artefact of its normalization guard). mergekit requires ``t``; our default is 0.5, the
midpoint. Expert weights are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register

DOT_THRESHOLD = 0.9995  # mergekit's colinearity threshold
NORM_EPS = 1e-8


@dataclass(frozen=True)
class SlerpConfig:
    t: float = param(0.5, "interpolation factor: 0 = base, 1 = expert", ge=0.0, le=1.0)


def slerp_tensors(t: float, v0: Tensor, v1: Tensor) -> Tensor:
    """Spherical interpolation between two same-shaped tensors (fresh result, inputs untouched)."""
    n0 = float(torch.linalg.vector_norm(v0))
    n1 = float(torch.linalg.vector_norm(v1))
    if n0 <= NORM_EPS or n1 <= NORM_EPS:
        return torch.lerp(v0, v1, t)
    cos = float(torch.dot(v0.reshape(-1), v1.reshape(-1))) / (n0 * n1)
    if abs(cos) > DOT_THRESHOLD:
        return torch.lerp(v0, v1, t)
    omega = math.acos(max(-1.0, min(1.0, cos)))
    sin_omega = math.sin(omega)
    s0 = math.sin((1 - t) * omega) / sin_omega
    s1 = math.sin(t * omega) / sin_omega
    return torch.mul(v0, s0).add_(v1, alpha=s1)


@register(
    "slerp",
    kind="dense",
    config=SlerpConfig,
    paper="https://en.wikipedia.org/wiki/Slerp",
    uses_base=True,
    min_experts=1,
    max_experts=1,
    uses_weights=False,
)
def slerp(base: Tensor | None, experts: Sequence[Tensor], config: SlerpConfig, ctx: TensorContext) -> Tensor:
    """SLERP between the base (t=0) and one expert (t=1); lerp when nearly colinear."""
    if base is None or len(experts) != 1:
        raise ValueError(f"{ctx.name}: slerp interpolates a base and exactly one expert, got {len(experts)} expert(s)")
    return slerp_tensors(config.t, base, experts[0])
