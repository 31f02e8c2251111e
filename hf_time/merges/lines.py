"""LiNeS: scale a merged task vector linearly with depth.

Paper: Wang et al., "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model
Merging", ICLR 2025, https://arxiv.org/abs/2410.17146

For block ℓ = 0..L−1 the merged task vector is scaled by α + β·ℓ/(L−1): shallow layers stay close to
the base (general features), deep layers keep the task-specific update. Parameters outside the blocks
(embeddings, final norm, head) get α. TIME uses α = β = 0.5. A model with a single block (L = 1) has
no depth to scale along: that block counts as the first one and gets α.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_time.merges.registry import TensorContext


def lines_scale(layer: int | None, num_layers: int | None, alpha: float, beta: float) -> float:
    """The LiNeS factor of a tensor in block ``layer`` of ``num_layers`` (α outside the blocks).

    Raises:
        ValueError: ``layer`` is outside ``0..num_layers-1``.
    """
    if layer is None or num_layers is None:
        return alpha
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} is outside 0..{num_layers - 1}")
    if num_layers == 1:
        return alpha
    return alpha + beta * layer / (num_layers - 1)


def apply_lines(base: Tensor, merged: Tensor, ctx: TensorContext, alpha: float, beta: float) -> Tensor:
    """θ_0 + s·(merged − θ_0) with s = :func:`lines_scale` for this tensor (fresh result)."""
    return torch.lerp(base, merged, lines_scale(ctx.layer, ctx.num_layers, alpha, beta))
