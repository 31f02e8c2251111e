"""PCB-merging: parameter competition balancing within and across task vectors.

Paper: Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024,
https://arxiv.org/abs/2410.02396 (reference code: github.com/duguodong7/pcb-merging, ``PCB_merge``).

Per tensor, with τ ∈ R^{n×d} the n task vectors flattened (rows = tasks):

1. Clip outliers: |τ_i| is clamped row-wise to [s_i[⌊dε⌋], s_i[⌊d(1−ε)⌋−1]] (s_i = sorted |τ_i|,
   ε = 1e-4); τ̂_i = sign(τ_i)·clamped.
2. Intra-balancing (importance within a task): β_intra = exp(n · norm(|τ̂_i|)²).
3. Inter-balancing (agreement with the other tasks): β_inter = tanh(τ_i ⊙ Σ_j τ_j) (unclipped τ).
4. β = β_intra ⊙ β_inter; drop: β_i is clamped from below at its ⌊d(1−r)⌋-th smallest value and
   min-max normalised, so the entries at or below that rank get score 0 and the top ≈ r·d entries
   keep a score in (0, 1] (``ratio`` = r, the fraction kept; the paper's drop ratio is 1 − r).
5. θ = θ_0 + λ · Σ_i w_i τ̂_i ⊙ β̂_i / max(Σ_i β̂_i, 1e-12).

norm(x) is the row-wise min-max (x − min)/(max − min). Defaults: ``ratio`` 0.1 (the reference
code's ``pcb_ratio``), λ = 1.0 and unit weights (the paper then tunes per-task λ_i in [0.8, 1.3] by
an evolutionary search on validation data: pass them as ``--weight``).
Deviations, stated: the reference flattens the *whole model* into one row per task; hf_time streams
tensors, so ranks and min-max ranges are per tensor. Where a row is constant (max = min: an all-zero
task vector, a one-element tensor, or nothing strictly above the drop rank) the reference divides
0/0 (NaN); here norm gives 0, so such a row keeps the base's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hf_time.merges import selection
from hf_time.merges.kernels import compute_dtype, task_vectors, weight_vector
from hf_time.merges.registry import TensorContext, param, register

PAPER = "https://arxiv.org/abs/2410.02396"
CLIP = 1e-4  # the reference code's outlier clip on both tails of |τ|


@dataclass(frozen=True)
class PcbConfig:
    ratio: float = param(0.1, "fraction of entries per task vector kept after balancing (paper's drop ratio = 1 - ratio)",
                         gt=0.0, le=1.0)
    lambda_: float = param(1.0, "scale of the merged task vector", alias="lambda")


def row_minmax(x: Tensor) -> Tensor:
    """Row-wise (x − min)/(max − min) of a 2-D tensor, as a fresh tensor; 0 on rows where max = min."""
    lo = x.min(dim=1, keepdim=True).values
    span = x.max(dim=1, keepdim=True).values - lo
    out = (x - lo).div_(span.masked_fill(span == 0, 1))
    flat = ~(span > 0)  # constant rows (and NaN ones): 0, not 0/0
    return out.masked_fill_(flat, 0.0) if bool(flat.any()) else out


def clamp_ranks(x: Tensor, low: float, high: float) -> Tensor:
    """Clamp each row of ``x`` to [its ⌊d·low⌋-th, its (⌊d·(1−high)⌋−1)-th smallest value] (reference ``clamp``).

    The reference sorts each row; the two values are found by exact selection instead
    (:func:`hf_time.merges.selection.thresholds`, linear time), with the reference's indexing (0-based,
    and an index of -1 is the largest, as Python's).
    """
    d = x.shape[1]
    if d == 0:
        return x.clone()
    k_lo, k_hi = int(d * low), int(d * (1 - high)) - 1
    k_hi += d if k_hi < 0 else 0
    bounds = [selection.thresholds(row, [d - k_lo, d - k_hi]) for row in x]  # the k-th smallest: (d−k)-th largest
    lo, hi = (torch.tensor([[row[i].value] for row in bounds], dtype=x.dtype, device=x.device) for i in (0, 1))
    out = torch.minimum(x, hi)
    return torch.maximum(out, lo, out=out)


def pcb_scores(tvs: Tensor, ratio: float) -> tuple[Tensor, Tensor]:
    """The clipped task vectors τ̂ and the balanced, dropped scores β̂ of stacked flat ``tvs`` (n, d)."""
    n = tvs.shape[0]
    magnitude = clamp_ranks(tvs.abs(), CLIP, CLIP)
    # the temporaries are updated in place, each op as the formula writes it (a product's operands commute)
    beta = row_minmax(magnitude).pow_(2).mul_(n).exp_()  # intra: exp(n · norm(|τ̂|)²)
    beta.mul_((tvs * tvs.sum(0, keepdim=True)).tanh_())  # times inter: tanh(τ ⊙ Σ_j τ_j)
    clipped = magnitude.mul_(torch.sign(tvs))  # sign(τ) · |τ̂|
    return clipped, row_minmax(clamp_ranks(beta, 1 - ratio, 0.0))


@register("pcb", kind="dense", config=PcbConfig, paper=PAPER, uses_base=True, min_experts=1)
def pcb(base: Tensor | None, experts: Sequence[Tensor], config: PcbConfig, ctx: TensorContext) -> Tensor:
    """PCB: intra-/inter-task balancing scores, drop all but the top ratio, score-weighted average of τ."""
    if base is None:
        raise ValueError(f"{ctx.name}: pcb needs a base model (θ_0)")
    base = base.to(compute_dtype(base))
    n = len(experts)
    flat = task_vectors(base, experts).reshape(n, -1)
    if flat.shape[1] == 0:  # an empty tensor: nothing to balance (its rows have no min or max)
        return base.clone()
    clipped, scores = pcb_scores(flat, config.ratio)
    w = weight_vector(ctx.weights, n, flat)
    merged = clipped.mul_(scores).mul_(w).sum(0).div_(scores.sum(0).clamp_min_(1e-12))
    return (base.reshape(-1) + config.lambda_ * merged).reshape(base.shape)
