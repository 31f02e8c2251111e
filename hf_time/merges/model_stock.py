"""Model Stock: move from the base towards the experts' average by an angle-derived ratio.

Paper: Jang et al., "Model Stock: All we need is just a few fine-tuned models", ECCV 2024,
https://arxiv.org/abs/2403.19522

Per tensor (or per row with ``filter_wise``, mergekit's option): cos = mean pairwise cosine of the
task vectors τ_i = θ_i − θ_0; t = k·cos / (1 + (k−1)·cos); θ = t·mean(θ_i) + (1−t)·θ_0
= θ_0 + t·mean(τ_i). Expert weights are ignored (as in mergekit).

Guards: a pair involving a zero task vector has cos 0 (as in mergekit, but without its absolute
1e-6 clamp on the norm product, which shrinks cosines of small updates); the mean cosine is clamped
to [0, 1] so t stays in [0, 1] (mergekit lets a negative mean cosine give t < 0, or divide by zero at
cos = −1/(k−1)); so experts equal to the base give the base back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from hf_time.merges.kernels import task_vectors
from hf_time.merges.registry import TensorContext, param, register


@dataclass(frozen=True)
class ModelStockConfig:
    filter_wise: bool = param(False, "one ratio per row (last dimension) instead of one per tensor")


def mean_pairwise_cosine(tvs: Tensor) -> Tensor:
    """Mean cosine over pairs i < j of rows of ``tvs`` shaped ``(k, rows, d)``; returns ``(rows,)``."""
    k = tvs.shape[0]
    gram = torch.einsum("ird,jrd->rij", tvs, tvs)  # (rows, k, k): one batched matmul
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    denom = norms.unsqueeze(2) * norms.unsqueeze(1)
    cos = torch.where(denom > 0, gram / denom.masked_fill(denom == 0, 1), 0.0).clamp_(-1, 1)
    i, j = torch.triu_indices(k, k, offset=1, device=tvs.device)
    return cos[:, i, j].mean(dim=1)


@register(
    "model_stock",
    kind="dense",
    config=ModelStockConfig,
    paper="https://arxiv.org/abs/2403.19522",
    uses_base=True,
    min_experts=2,
    uses_weights=False,
)
def model_stock(base: Tensor | None, experts: Sequence[Tensor], config: ModelStockConfig, ctx: TensorContext) -> Tensor:
    """Model Stock: θ_0 + t·mean(τ_i), t from the mean pairwise cosine of the task vectors."""
    if base is None:
        raise ValueError(f"{ctx.name}: model_stock needs a base model (θ_0)")
    k = len(experts)
    if k < 2:
        raise ValueError(f"{ctx.name}: model_stock needs at least 2 experts, got {k}")
    tvs = task_vectors(base, experts)
    if config.filter_wise and base.dim() >= 2:
        rows = tvs.view(k, -1, base.shape[-1])
    else:
        rows = tvs.view(k, 1, -1)
    cos = mean_pairwise_cosine(rows).clamp_(0, 1)
    t = (k * cos) / (1 + (k - 1) * cos)  # (rows,)
    out = tvs.mean(dim=0).view(rows.shape[1], -1).mul_(t.view(-1, 1))
    return out.view(base.shape).add_(base)
