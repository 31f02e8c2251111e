"""TIES merging: trim, elect sign, disjoint merge.

Paper: Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
https://arxiv.org/abs/2306.01708

Each τ_i keeps its top-``density`` magnitudes; the sign of Σ_i w_i τ_i is elected per entry; entries
agreeing with it are summed and (``normalize``) divided by the sum of their weights; θ = θ_0 + λ·that.
Defaults are mergekit's ``ties`` (density 1.0, normalize true, lambda 1.0); the TIES paper keeps 20%
(``-p density=0.2``). ``threshold_scope=global`` uses magnitude thresholds over the whole model, as
TIME's reference code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register
from hf_time.merges.task_arithmetic import SCOPE_HELP, Recipe, run_recipe, topk_quantiles

TIES = Recipe(sparsify="magnitude", consensus=True)


@dataclass(frozen=True)
class TiesConfig:
    density: float = param(1.0, "fraction of largest-|τ| entries kept per expert (paper: 0.2)", gt=0.0, le=1.0, per_expert=True)
    normalize: bool = param(True, "divide by the sum of the weights of the entries agreeing with the elected sign")
    lambda_: float = param(1.0, "scale of the merged task vector", alias="lambda")
    threshold_scope: str = param("tensor", SCOPE_HELP, choices=("tensor", "global"), per_tensor=False)


@register(
    "ties",
    kind="dense",
    config=TiesConfig,
    paper="https://arxiv.org/abs/2306.01708",
    uses_base=True,
    min_experts=1,
    global_quantiles=topk_quantiles, native_inputs=True)
def ties(base: Tensor | None, experts: Sequence[Tensor], config: TiesConfig, ctx: TensorContext) -> Tensor:
    """TIES: keep top-density magnitudes, elect signs, average the agreeing entries."""
    return run_recipe(TIES, base, experts, config, ctx)
