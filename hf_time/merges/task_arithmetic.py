"""Task arithmetic, and the recipe runner shared by its variants (TIES, DARE, Breadcrumbs).

Paper: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023, https://arxiv.org/abs/2212.04089

θ = θ_0 + λ · Σ_i w_i τ_i (divided by Σ w_i with ``normalize``). The variants differ only by a
:class:`Recipe` (how τ_i is sparsified, whether signs are elected) run through the same kernel,
:func:`hf_time.merges.kernels.generalized_task_arithmetic`.

Defaults follow mergekit's ``task_arithmetic`` (weight 1 per expert, ``normalize: false``,
``lambda: 1.0``) so a mergekit YAML gives the same numbers. FusionBench's convention is
``lambda=0.3`` with unit weights: pass ``-p lambda=0.3`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from torch import Tensor

from hf_time.merges import kernels
from hf_time.merges.registry import TensorContext, param, register, seeded_generator

PAPER = "https://arxiv.org/abs/2212.04089"
SCOPE_HELP = "where magnitude thresholds are computed: per tensor, or over the whole model (TIME's code)"


@dataclass(frozen=True)
class Recipe:
    """A task-arithmetic variant as data: how each τ_i is sparsified and whether signs are elected."""

    sparsify: Literal["none", "magnitude", "band", "random"]
    consensus: bool


def run_recipe(recipe: Recipe, base: Tensor | None, experts: Sequence[Tensor], config: Any, ctx: TensorContext) -> Tensor:
    """Merge one tensor with ``recipe``, reading the parameters the config declares.

    Config fields read when present: ``density`` and ``gamma`` (per expert), ``rescale``,
    ``normalize``, ``lambda_``, ``threshold_scope``, ``seed`` (random drops).

    Raises:
        ValueError: no base, or global thresholds asked for but not supplied by the engine.
    """
    if base is None:
        raise ValueError(f"{ctx.name}: task-vector methods need a base model (θ_0)")
    n = len(experts)
    density = ctx.per_expert("density", getattr(config, "density", 1.0))
    gamma = ctx.per_expert("gamma", getattr(config, "gamma", 0.0))
    thresholds = _global_thresholds(config, ctx, n)
    base = base.to(kernels.compute_dtype(base))  # no copy when already float32
    tvs = kernels.task_vectors(base, experts)
    for i in range(n):
        given = None if thresholds is None or density[i] >= 1 else _check_len(thresholds[i], recipe, ctx.name)
        if recipe.sparsify == "magnitude":
            kernels.trim_magnitude_(tvs[i], density[i], None if given is None else given[0])
        elif recipe.sparsify == "band":
            kernels.trim_band_(tvs[i], density[i], gamma[i], given)
        elif recipe.sparsify == "random":
            generator = seeded_generator(config.seed, ctx.name, offset=i, device=tvs.device)
            kernels.random_drop_(tvs[i], density[i], generator)
    scales = None
    if recipe.sparsify == "random" and getattr(config, "rescale", False):
        scales = [1.0 / d if d < 1 else 1.0 for d in density]
    return kernels.generalized_task_arithmetic(
        base,
        tvs,
        ctx.weights,
        consensus=recipe.consensus,
        normalize=getattr(config, "normalize", False),
        lambda_=getattr(config, "lambda_", 1.0),
        scales=scales,
    )


def _global_thresholds(config: Any, ctx: TensorContext, n: int) -> tuple[tuple[float, ...], ...] | None:
    if getattr(config, "threshold_scope", "tensor") != "global":
        return None
    if ctx.magnitude_thresholds is None or len(ctx.magnitude_thresholds) != n:
        raise ValueError(f"{ctx.name}: threshold_scope=global needs one tuple of magnitude thresholds per expert")
    return ctx.magnitude_thresholds


def _check_len(values: tuple[float, ...], recipe: Recipe, name: str) -> tuple[float, ...]:
    expected = 2 if recipe.sparsify == "band" else 1
    if len(values) != expected:
        raise ValueError(f"{name}: expected {expected} global magnitude threshold(s) per expert, got {values!r}")
    return values


def topk_quantiles(config: Any, expert_params: Mapping[str, Any]) -> tuple[float, ...]:
    """Global scope: the |τ| quantile a top-``density`` trim needs (none for per-tensor scope)."""
    if config.threshold_scope != "global":
        return ()
    return kernels.topk_fractions(expert_params.get("density", config.density))


def band_quantiles(config: Any, expert_params: Mapping[str, Any]) -> tuple[float, ...]:
    """Global scope: the |τ| quantiles bounding a Breadcrumbs band (none for per-tensor scope)."""
    if config.threshold_scope != "global":
        return ()
    return kernels.band_fractions(expert_params.get("density", config.density), expert_params.get("gamma", config.gamma))


TASK_ARITHMETIC = Recipe(sparsify="none", consensus=False)


@dataclass(frozen=True)
class TaskArithmeticConfig:
    lambda_: float = param(1.0, "scale of the merged task vector (mergekit 1.0; FusionBench uses 0.3)", alias="lambda")
    normalize: bool = param(False, "divide the weighted sum by the sum of the weights")


@register("task_arithmetic", kind="dense", config=TaskArithmeticConfig, paper=PAPER, uses_base=True, min_experts=1,
          native_inputs=True)
def task_arithmetic(base: Tensor | None, experts: Sequence[Tensor], config: TaskArithmeticConfig, ctx: TensorContext) -> Tensor:
    """Task arithmetic: θ_0 + λ·Σ w_i (θ_i − θ_0)."""
    if base is None:
        raise ValueError(f"{ctx.name}: task arithmetic needs a base model (θ_0)")
    # θ_0 + Σ c_i (θ_i − θ_0) = (1 − Σ c_i)·θ_0 + Σ c_i·θ_i with c_i = λ w_i / (Σ w if normalize):
    # the same numbers as the generalized kernel, without stacking n task vectors.
    total = float(sum(ctx.weights)) if config.normalize else 1.0
    coefs = [config.lambda_ * w / (total if abs(total) >= kernels.DIVISOR_EPS else 1.0) for w in ctx.weights]
    return kernels.weighted_sum(experts, coefs, start=base, start_coef=1.0 - sum(coefs))
