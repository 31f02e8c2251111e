"""Fisher merging: a per-parameter weighted average of the experts, weighted by their diagonal Fisher.

Paper: Matena & Raffel, "Merging Models with Fisher-Weighted Averaging", NeurIPS 2022,
https://arxiv.org/abs/2111.09832 (reference: FusionBench 0.2.33 ``fisher_merging``).

θ = Σ_i λ_i F̃_i ⊙ θ_i / Σ_i λ_i F̃_i with F̃_i = max(F_i, ε), per entry; λ_i are the expert weights
(uniform by default; the paper tunes them on validation data). F_i is expert i's diagonal Fisher on
its own task (:mod:`hf_time.fisher`, ``hf-time fisher``), stored as ``fisher.safetensors`` in the
expert's repo or folder with the tensor names of its checkpoint.

Defaults and deviations: ε = 1e-6 as the paper's ``fisher_floor`` (the paper adds it, hf_time floors
with it: identical wherever F ≥ ε matters, and a parameter no expert's data touches — F = 0
everywhere — becomes the λ-weighted average of the experts, never 0/0). θ_0 is not an input, so a
parameter whose Fisher is 0 for every expert is simply averaged. FusionBench normalises each Fisher
by its global norm as an option (off by default); not offered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register

PAPER = "https://arxiv.org/abs/2111.09832"


@dataclass(frozen=True)
class FisherMergeConfig:
    epsilon: float = param(1e-6, "floor of every Fisher value, F ← max(F, ε) (the paper's fisher_floor)", gt=0.0)


@register("fisher", kind="data", config=FisherMergeConfig, paper=PAPER, min_experts=1, uses_base=False,
          statistic="fisher.safetensors", compute_hint="hf-time fisher {expert} --task TASK --push-to {repo}")
def fisher(base: Tensor | None, experts: Sequence[Tensor], fishers: Sequence[Tensor], config: FisherMergeConfig,
           ctx: TensorContext) -> Tensor:
    """Fisher merging: Σ λ_i F_i θ_i / Σ λ_i F_i, per entry, with an ε floor on F."""
    if len(fishers) != len(experts):
        raise ValueError(f"{ctx.name}: got {len(fishers)} Fisher tensors for {len(experts)} experts")
    dtype = torch.promote_types(experts[0].dtype, torch.float32)
    num = torch.zeros(experts[0].shape, dtype=dtype, device=experts[0].device)
    den = torch.zeros_like(num)
    for w, theta, f in zip(ctx.weights, experts, fishers):
        weight = f.to(dtype).clamp_min(config.epsilon).mul_(w)
        num.addcmul_(weight, theta.to(dtype))
        den.add_(weight)
    return num.div_(den)
