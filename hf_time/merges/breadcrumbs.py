"""Model Breadcrumbs: drop the largest outliers and the small entries of each task vector.

Paper: Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
ECCV 2024, https://arxiv.org/abs/2312.06795

Per τ_i the top ``gamma`` fraction of |τ| is dropped and the next ``density`` fraction kept (when
gamma + density > 1, fewer outliers are dropped so density is still kept); then task arithmetic
(``breadcrumbs``) or TIES election (``breadcrumbs_ties``). Defaults are mergekit's (density 1.0 =
no pruning, gamma 0.01, normalize false, lambda 1.0); the paper's setting is e.g. density 0.9,
gamma 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register
from hf_time.merges.task_arithmetic import SCOPE_HELP, Recipe, band_quantiles, run_recipe

PAPER = "https://arxiv.org/abs/2312.06795"
BREADCRUMBS = Recipe(sparsify="band", consensus=False)
BREADCRUMBS_TIES = Recipe(sparsify="band", consensus=True)


@dataclass(frozen=True)
class BreadcrumbsConfig:
    density: float = param(1.0, "fraction of |τ| entries kept, below the dropped outliers", gt=0.0, le=1.0, per_expert=True)
    gamma: float = param(0.01, "fraction of largest-|τ| outliers dropped", ge=0.0, lt=1.0, per_expert=True)
    normalize: bool = param(False, "divide by the sum of the weights (of agreeing entries for breadcrumbs_ties)")
    lambda_: float = param(1.0, "scale of the merged task vector", alias="lambda")
    threshold_scope: str = param("tensor", SCOPE_HELP, choices=("tensor", "global"), per_tensor=False)


@register("breadcrumbs", kind="dense", config=BreadcrumbsConfig, paper=PAPER, uses_base=True,
          global_quantiles=band_quantiles, native_inputs=True)
def breadcrumbs(base: Tensor | None, experts: Sequence[Tensor], config: BreadcrumbsConfig, ctx: TensorContext) -> Tensor:
    """Breadcrumbs: drop the top-gamma outliers, keep the next density of |τ|, sum."""
    return run_recipe(BREADCRUMBS, base, experts, config, ctx)


@register(
    "breadcrumbs_ties", kind="dense", config=BreadcrumbsConfig, paper=PAPER, uses_base=True,
    global_quantiles=band_quantiles, native_inputs=True,
)
def breadcrumbs_ties(base: Tensor | None, experts: Sequence[Tensor], config: BreadcrumbsConfig, ctx: TensorContext) -> Tensor:
    """Breadcrumbs + TIES: magnitude band per expert, elect signs, disjoint sum."""
    return run_recipe(BREADCRUMBS_TIES, base, experts, config, ctx)
