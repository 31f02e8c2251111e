"""DARE: drop and rescale, then task arithmetic (``dare_linear``) or TIES (``dare_ties``).

Paper: Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", ICML 2024, https://arxiv.org/abs/2311.03099

Each entry of τ_i survives with probability ``density`` (drop rate p = 1 − density); with ``rescale``
survivors are divided by ``density`` so E[τ̃_i] = τ_i. Masks come from :func:`~hf_time.merges.registry.seeded_generator` (seeded
per tensor and per expert), so the same seed gives the same merge. Defaults are mergekit's (density 1.0,
rescale true, normalize false, lambda 1.0). mergekit's current ``rescale`` matches the l1 norm of the
survivors instead of dividing by density; we keep the paper's unbiased 1/density.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register
from hf_time.merges.task_arithmetic import Recipe, run_recipe

PAPER = "https://arxiv.org/abs/2311.03099"
DARE_LINEAR = Recipe(sparsify="random", consensus=False)
DARE_TIES = Recipe(sparsify="random", consensus=True)


@dataclass(frozen=True)
class DareConfig:
    density: float = param(1.0, "probability of keeping each entry of τ (1 − drop rate)", gt=0.0, le=1.0, per_expert=True)
    rescale: bool = param(True, "divide the survivors by density (unbiased)")
    normalize: bool = param(False, "divide by the sum of the weights (of agreeing entries for dare_ties)")
    lambda_: float = param(1.0, "scale of the merged task vector", alias="lambda")
    seed: int = param(0, "seed of the drop masks (with the tensor name and expert index; same seed, same merge)", ge=0)


@register("dare_linear", kind="dense", config=DareConfig, paper=PAPER, uses_base=True, min_experts=1, native_inputs=True)
def dare_linear(base: Tensor | None, experts: Sequence[Tensor], config: DareConfig, ctx: TensorContext) -> Tensor:
    """DARE + task arithmetic: randomly drop τ entries, rescale by 1/density, sum."""
    return run_recipe(DARE_LINEAR, base, experts, config, ctx)


@register("dare_ties", kind="dense", config=DareConfig, paper=PAPER, uses_base=True, min_experts=1, native_inputs=True)
def dare_ties(base: Tensor | None, experts: Sequence[Tensor], config: DareConfig, ctx: TensorContext) -> Tensor:
    """DARE + TIES: randomly drop τ entries, rescale by 1/density, elect signs, disjoint sum."""
    return run_recipe(DARE_TIES, base, experts, config, ctx)
