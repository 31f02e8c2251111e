"""OPCM: sequential merging by orthogonal projection, with a global norm-preserving rescale.

Paper: Tang et al., "Merging Models on the Fly Without Retraining: A Sequential Approach to Scalable
Continual Model Merging", 2025, https://arxiv.org/abs/2501.09522

θ^(1) = θ_1 and N = [‖τ_1‖]. At step t ≥ 2, with Δ = θ^(t−1) − θ_0 and λ_{t−1} from the previous step:

* every projected weight W (see :func:`is_projected`): SVD Δ_W = U diag(s) Vᵀ; r is the first 0-based k
  with cumsum(s)[k]/Σs > α (:func:`split_rank`); P = Uᵀ τ_W V with its diagonal and its block
  P[:r, :r] zeroed; S_W = λ_{t−1}·Δ_W + U P Vᵀ (:func:`project_out` computes U P Vᵀ);
* every other floating tensor: S_p = λ_{t−1}·Δ_p + τ_p;
* N gets ‖τ_t‖, n̄ = mean(N), λ_t = ‖S‖/n̄ over the whole model, and θ^(t) = θ_0 + S/λ_t.

λ_t needs ‖S‖ over all tensors before any θ^(t) tensor can be written, so a fold with OPCM runs two
streaming passes (:mod:`hf_time.pipeline.executors.sequential`): this module's per-tensor function
returns S, and :func:`next_state` turns the norms into λ_t. The state carried between folds is
``{"lambda": λ_t, "norms": N}``.

Checked against the reference implementation, FusionBench (tanganke/fusion_bench,
``fusion_bench/method/opcm/opcm.py`` and ``opcm_general.py``, ``config/method/opcm/opcm.yaml``):

* λ_1 = 1: the first model is loaded as is and ``previous_lambda_t = 1``. Each step merges with a
  temporary λ = 1 (θ_0 + S), then multiplies the merged task vector by n̄/‖θ_0 + S − θ_0‖: exactly
  θ_0 + S/λ_t with λ_t = ‖S‖/n̄. Norms are over the full state dict (one flattened vector).
* r = ``(s.cumsum(0) / s.sum() > alpha).float().argmax()``: the first index above α, with singular
  values (not their squares); 0 when no index qualifies. α = 0.5 by default.
* The SVD is of Δ = θ^(t−1) − θ_0 (``merged_W - pretrained_W``), not of λ_{t−1}·Δ; the two have the
  same singular vectors and the same r (the rule is scale-free), so it does not matter.
* Projected tensors: the ``weight`` of every ``nn.Linear`` leaf module. Embeddings, norms, convs and
  biases are "other parameters". On a CLIP vision tower (the paper's setting) these are exactly the
  2-D weights inside the transformer blocks, which is the rule used here, decided from names alone
  (:func:`is_projected`). It differs from FusionBench on heads outside the blocks that are
  ``nn.Linear`` (``lm_head``, CLIP's projections, classifiers): we treat them as other parameters,
  which also spares a full SVD of a vocabulary-sized matrix. Parameters held directly by a non-leaf
  module (CLIP's ``class_embedding``) are never updated by FusionBench, only rescaled; here every
  floating tensor takes part.

FusionBench takes a *full* SVD (U is m×m). Every zeroed entry of P lies in its leading k×k block
(k = min(m, n)), so τ − U_k P_Z V_kᵀ (P_Z: the zeroed entries) is the same matrix computed from the
thin SVD, with O((m+n)k) memory instead of O(m²+n²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register

PAPER = "https://arxiv.org/abs/2501.09522"


def is_projected(ctx: TensorContext, shape: tuple[int, ...] | torch.Size) -> bool:
    """Whether OPCM projects this tensor: a 2-D ``*.weight`` inside a transformer block, not an embedding.

    ``ctx.layer`` is set by the engine for names inside blocks (``layers.3.``, ``h.3.``, ``block.3.``...).
    Embedding tables inside blocks (T5's ``relative_attention_bias``) are excluded by name.
    """
    name = ctx.name
    return (
        len(shape) == 2
        and name.endswith(".weight")
        and ctx.layer is not None
        and "embed" not in name
        and "relative_attention_bias" not in name
    )


def split_rank(s: Tensor, alpha: float) -> int:
    """r: the first 0-based k with cumsum(s)[k] / sum(s) > alpha; 0 if there is none (e.g. s = 0)."""
    total = s.sum()
    if not total > 0:
        return 0
    above = torch.nonzero(torch.cumsum(s, 0) / total > alpha)
    return int(above[0, 0]) if above.numel() else 0


def project_out(delta: Tensor, tau: Tensor, alpha: float) -> Tensor:
    """τ̃ = U P Vᵀ: τ without its components on Δ's singular pairs (i, i) and on the top-r block.

    Args:
        delta: Δ_W, the running merged update of this weight (m×n).
        tau: τ_W, the new task vector of this weight (m×n).
        alpha: the split threshold of :func:`split_rank`.

    Returns:
        A fresh m×n tensor; the inputs are untouched.
    """
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = s.numel()
    r = split_rank(s, alpha)
    coeffs = u.T @ tau @ vh.T  # the leading k×k block of P = Uᵀ τ V
    zeroed = torch.eye(k, dtype=torch.bool, device=tau.device)
    zeroed[:r, :r] = True
    removed = coeffs * zeroed
    return tau - u @ removed @ vh


@dataclass(frozen=True)
class OPCMConfig:
    alpha: float = param(0.5, "split threshold: r = first k whose cumulative singular-value share of Δ exceeds alpha",
                         ge=0.0, le=1.0)


# Sequential declarations (see hf_time.merges.registry.SequentialMethod): the state, the passes.
STATE_KEYS = ("lambda", "norms")


def two_pass(config: OPCMConfig, t: int) -> bool:
    """Every step but the first needs the global rescale; θ^(1) = θ_1 is written directly."""
    return t >= 2


def check_state(config: OPCMConfig, state: Mapping[str, Any]) -> list[str]:
    """Problems with an incoming state (t ≥ 2), each naming its key."""
    problems = []
    lam, norms, t = state.get("lambda"), state.get("norms"), state.get("t")
    if "lambda" in state and not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        problems.append(f"state key 'lambda' must be a positive number, got {lam!r}")
    if "norms" in state and not (isinstance(norms, list) and all(isinstance(x, (int, float)) for x in norms)
                                 and len(norms) == t):
        problems.append(f"state key 'norms' must list one task-vector norm per folded expert ({t}), got {norms!r}")
    return problems


def next_state(config: OPCMConfig, state: Mapping[str, Any], stats: Any) -> tuple[dict[str, Any], float | None]:
    """N with ‖τ_t‖ appended, and λ_t = ‖S‖ / mean(N) (also the divisor of the second pass).

    ``stats`` has ``task_vector_norm`` (‖τ_t‖) and ``update_norm`` (‖S‖, two-pass folds only).
    """
    norms = [*state.get("norms", []), float(stats.task_vector_norm)]
    if int(state["t"]) == 1:
        return {"lambda": 1.0, "norms": norms}, None
    mean_norm = sum(norms) / len(norms)
    # ‖S‖ = 0 only when every task vector so far is 0: θ^(t) = θ_0 whatever λ_t, so keep λ = 1.
    lam = float(stats.update_norm) / mean_norm if stats.update_norm > 0 else 1.0
    return {"lambda": lam, "norms": norms}, lam


@register("opcm", kind="sequential", config=OPCMConfig, paper=PAPER, uses_base=True, state_keys=STATE_KEYS,
          two_pass=two_pass, next_state=next_state, check_state=check_state)
def opcm(previous: Tensor | None, base: Tensor, expert: Tensor, config: OPCMConfig, ctx: TensorContext,
         state: Mapping[str, Any]) -> Tensor:
    """OPCM: add each task vector projected off the merge's main singular directions; rescale to the mean norm."""
    if previous is None:  # t = 1: θ^(1) = θ_1, written as is (one pass)
        return expert.clone()
    delta = previous - base
    tau = expert - base
    if is_projected(ctx, tau.shape):
        tau = project_out(delta, tau, config.alpha)
    # S = λ_{t−1}·Δ + τ̃; the fold divides it by λ_t and adds θ_0 in its second pass.
    return tau.add_(delta, alpha=float(state["lambda"]))
