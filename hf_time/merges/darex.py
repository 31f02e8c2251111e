"""DAREx-q: DARE with the rescale 1/(1−p) replaced by 1/q, for extreme drop rates.

Paper: Deng et al., "DARE the Extreme: Revisiting Delta-Parameter Pruning for Fine-Tuned Models",
ICLR 2025, https://arxiv.org/abs/2410.09344 (reference code: github.com/vengdeng/DAREx).

Each entry of τ_i survives with probability 1 − p (``density``), exactly as in DARE (same seeded
masks, so ``darex_q`` and ``dare_linear`` drop the same entries); the survivors are divided by q
instead of 1 − p, then summed as in task arithmetic: θ = θ_0 + λ·Σ_i w_i m_i ⊙ τ_i / q_i.
At p ≥ 0.9 DARE's factor 1/(1−p) (10×, 100×) blows up the variance of the pruned output; a larger
q (a smaller factor) trades a little bias for much less variance.

How q is chosen (``q``):
* ``q > 0``: one global q, the paper's q_v / q_e — tuned on validation or unlabeled task data.
  hf_time tunes it on *unlabeled* texts by the change of the last hidden states
  (:func:`hf_time.darex_tune.tune_darex_q`), the paper's q_e.
* ``q = 0`` (default): the per-layer analytical q of the reference ``analytical_resolve_new``,
  data-free: for every row r of the tensor with c_r = τ_r ⊙ x̄ (x̄ = mean input activation; hf_time
  takes x̄ = 1, which makes it data-free), q_r minimises over the grid q ∈ [1−p, 0.999] (step 1e-3)
      | η (1 − (1−p)/q) Σ_j c_rj + η² φ(p) Σ_j c_rj² / (4q²) + log(2/(1−γ)) |,
  φ(p) = (1−2p)/log((1−p)/p) (→ 1/2 at p = 1/2); the tensor's q is the mean of q_r.
  Defaults η = 0.45, γ = 0.95 as in the reference. Deviations: the reference stops its grid scan
  early once 80% of rows stopped improving (an outlier guard) and skips biases, norms and
  embeddings (they keep DARE's 1/(1−p)); here the whole grid is scanned and every tensor gets its q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hf_time.merges import kernels
from hf_time.merges.registry import TensorContext, param, register, seeded_generator

PAPER = "https://arxiv.org/abs/2410.09344"


@dataclass(frozen=True)
class DarexConfig:
    density: float = param(0.1, "probability of keeping each entry of τ (1 − drop rate p)", gt=0.0, le=1.0, per_expert=True)
    q: float = param(0.0, "rescale survivors by 1/q; 0 = choose q per tensor analytically (data-free)", ge=0.0, le=1.0,
                     per_expert=True)
    eta: float = param(0.45, "η of the analytical q (balances the bias and variance terms)", gt=0.0)
    gamma: float = param(0.95, "γ, the probability of the analytical bound", gt=0.0, lt=1.0)
    lambda_: float = param(1.0, "scale of the merged task vector", alias="lambda")
    seed: int = param(0, "seed of the drop masks (same masks as dare_linear with the same seed)", ge=0)


def phi(p: float) -> float:
    """φ(p) = (1 − 2p) / log((1 − p)/p), continuous at p = 1/2 (value 1/2)."""
    if abs(p - 0.5) < 1e-9:
        return 0.5
    return (1 - 2 * p) / math.log((1 - p) / p)


def analytical_q(tv: Tensor, p: float, *, eta: float = 0.45, gamma: float = 0.95, activation: Tensor | None = None) -> float:
    """The per-tensor q of the analytical rule (mean over rows of each row's best grid q).

    Args:
        tv: one task vector (any shape; rows are its first dimension, a 1-D tensor is one row).
        p: drop rate (0 < p < 1).
        eta, gamma: η and γ of the bound.
        activation: mean input activation x̄ (length = the last dimension); None uses ones (data-free).

    Returns:
        q in [1 − p, 0.999] (1 − p when p = 0 or the tensor is empty).
    """
    if p <= 0 or tv.numel() == 0:
        return 1.0
    rows = tv.reshape(tv.shape[0], -1) if tv.dim() >= 2 else tv.reshape(1, -1)
    c = rows.double() if activation is None else rows.double() * activation.double().reshape(1, -1)
    s1, s2 = c.sum(1, keepdim=True), (c * c).sum(1, keepdim=True)
    start = max(int((1 - p) * 1000), 1)
    grid = (torch.arange(start, 1000, dtype=torch.float64, device=tv.device) / 1000 if start < 1000
            else torch.tensor([0.999], dtype=torch.float64, device=tv.device))
    grid = grid.reshape(1, -1)
    objective = (eta * (1 - (1 - p) / grid) * s1 + eta**2 * phi(p) * s2 / (4 * grid**2) + math.log(2 / (1 - gamma))).abs()
    return float(grid[0, objective.argmin(dim=1)].mean())


@register("darex_q", kind="dense", config=DarexConfig, paper=PAPER, uses_base=True, min_experts=1)
def darex_q(base: Tensor | None, experts: Sequence[Tensor], config: DarexConfig, ctx: TensorContext) -> Tensor:
    """DAREx-q: DARE's random drop, survivors rescaled by 1/q (per tensor or global) instead of 1/(1−p)."""
    if base is None:
        raise ValueError(f"{ctx.name}: darex_q needs a base model (θ_0)")
    base = base.to(kernels.compute_dtype(base))
    n = len(experts)
    density = ctx.per_expert("density", config.density)
    fixed_q = ctx.per_expert("q", config.q)
    tvs = kernels.task_vectors(base, experts)
    scales = []
    for i in range(n):
        if density[i] >= 1:
            scales.append(1.0)
            continue
        q = fixed_q[i] or analytical_q(tvs[i], 1 - density[i], eta=config.eta, gamma=config.gamma)
        kernels.random_drop_(tvs[i], density[i], seeded_generator(config.seed, ctx.name, offset=i, device=tvs.device))
        scales.append(1.0 / q)
    return kernels.generalized_task_arithmetic(base, tvs, ctx.weights, consensus=False, normalize=False,
                                               lambda_=config.lambda_, scales=scales)
