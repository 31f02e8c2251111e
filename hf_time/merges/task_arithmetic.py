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

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import Tensor

from hf_time.merges import bitselect, kernels, workers
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

    Magnitude trims are decided over whole task vectors (the per-tensor thresholds), then the trims,
    the sign election and the combination run on cache-sized slices (:func:`_merge_slices`); random
    drops draw slice by slice, the same numbers as over the whole tensor (:class:`RandomDrop`).

    Raises:
        ValueError: no base, or global thresholds asked for but not supplied by the engine.
    """
    if base is None:
        raise ValueError(f"{ctx.name}: task-vector methods need a base model (θ_0)")
    n = len(experts)
    density = ctx.per_expert("density", getattr(config, "density", 1.0))
    gamma = ctx.per_expert("gamma", getattr(config, "gamma", 0.0))
    thresholds = _global_thresholds(config, ctx, n)
    combine = functools.partial(kernels.generalized_task_arithmetic, weights=ctx.weights, consensus=recipe.consensus,
                                normalize=getattr(config, "normalize", False), lambda_=getattr(config, "lambda_", 1.0))
    if recipe.sparsify != "random":
        return _merge_slices(base, experts, _trims(recipe, base, experts, density, gamma, thresholds, ctx.name), combine)
    drops = [RandomDrop(density[i], seeded_generator(config.seed, ctx.name, offset=i, device=base.device))
             if density[i] < 1 else None for i in range(n)]
    scales = None
    if getattr(config, "rescale", False):
        scales = [1.0 / d if d < 1 else 1.0 for d in density]
    return _merge_slices(base, experts, drops, functools.partial(combine, scales=scales))


@dataclass
class RandomDrop:
    """DARE's drop of one task vector as a trim for :func:`_merge_slices`: each entry kept with probability
    ``density``, slice by slice in index order from the expert's own ``generator``.

    A CPU generator yields ``torch.rand``'s numbers one by one in index order, so the slices draw exactly
    what one draw over the whole tensor would (``tests/test_sliced_merges.py`` checks it); on an
    accelerator the slice is the whole tensor.
    """

    density: float
    generator: torch.Generator

    def apply_(self, chunk: Tensor) -> Tensor:
        return kernels.random_drop_(chunk, self.density, self.generator)

    def masks(self, spans: Sequence[tuple[int, int]]) -> Iterator[Tensor]:
        """The keep masks of ``spans`` in turn (1.0 kept, 0.0 dropped): what :meth:`apply_` would multiply
        each slice by, drawn from the generator in the same order."""
        for lo, hi in spans:
            yield kernels.keep_mask(hi - lo, self.density, self.generator)


def _trims(recipe: Recipe, base: Tensor, experts: Sequence[Tensor], density: Sequence[float], gamma: Sequence[float],
           thresholds: tuple[tuple[float, ...], ...] | None, name: str) -> list[kernels.MagnitudeTrim | None]:
    """Each expert's magnitude trim (None: kept whole), decided over its whole task vector θ_i − θ_0.

    Per-tensor thresholds of all the experts are ranked together (large CPU tensors: one chunked pass
    that reads θ_0 once for every expert, without holding any τ_i: :func:`selection.thresholds_each`).
    """
    out: list[kernels.MagnitudeTrim | None] = [None] * len(experts)
    ranked = {}  # expert -> (start, stop) of the magnitude ranks it keeps
    for i, expert in enumerate(experts):
        if recipe.sparsify == "none" or density[i] >= 1:
            continue
        band = recipe.sparsify == "band"
        if thresholds is None:
            ranked[i] = kernels.magnitude_ranks(expert.numel(), density[i], gamma[i] if band else 0.0)
            continue
        given = _check_len(thresholds[i], recipe, name)
        out[i] = kernels.band_trim(expert, density[i], gamma[i], given) if band else \
            kernels.magnitude_trim(expert, density[i], given[0])
    trims = kernels.MagnitudeTrim.ranks_each([experts[i] for i in ranked], list(ranked.values()), minus=base)
    for i, trim in zip(ranked, trims):
        out[i] = trim
    return out


def _merge_slices(base: Tensor, experts: Sequence[Tensor], trims: Sequence[kernels.MagnitudeTrim | RandomDrop | None],
                  combine: Callable[..., Tensor]) -> Tensor:
    """τ_i = θ_i − θ_0, trimmed (or randomly dropped) and combined one cache-sized slice at a time, in index order.

    Every step is elementwise given the trims (which carry their tie counts, or their generator's state,
    from slice to slice), so the result is bit-identical to stacking whole task vectors, without the
    ``(n, *shape)`` float32 stack or a float32 copy of the base: memory is the output plus one slice per input.

    On CPU, random drops are drawn ahead, each expert's on a thread of its own (:func:`workers.ahead`):
    a generator yields its numbers one by one (~4 ns each), the larger part of a DARE merge, but the
    experts' generators are independent of one another.
    """
    dtype = kernels.compute_dtype(base)
    out = torch.empty(base.shape, dtype=dtype, device=base.device)
    flat_out, flat_base = out.view(-1), base.reshape(-1)
    flat_experts = [e.reshape(-1) for e in experts]
    step = bitselect.chunk_size(flat_out, bitselect.SLICE)  # a whole-tensor slice on an accelerator
    stack = torch.empty(len(experts) * step, dtype=dtype, device=base.device)
    base_buf = torch.empty(step, dtype=dtype, device=base.device)
    spans = list(bitselect.chunks(flat_out, bitselect.SLICE))
    drawn = {i: t.masks(spans) for i, t in enumerate(trims) if isinstance(t, RandomDrop) and base.device.type == "cpu"}
    with workers.ahead(list(drawn.values())) as streams:
        masks = dict(zip(drawn, streams))
        for lo, hi in spans:
            b = base_buf[: hi - lo].copy_(flat_base[lo:hi])
            tvs = stack[: len(experts) * (hi - lo)].view(len(experts), hi - lo)
            for i, e in enumerate(flat_experts):
                tvs[i].copy_(e[lo:hi])
            tvs.sub_(b)
            for i, trim in enumerate(trims):
                if i in masks:
                    tvs[i].mul_(next(masks[i]))
                elif trim is not None:
                    trim.apply_(tvs[i])
            flat_out[lo:hi].copy_(combine(b, tvs))
    return out


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
          native_inputs=True, elementwise=True)
def task_arithmetic(base: Tensor | None, experts: Sequence[Tensor], config: TaskArithmeticConfig, ctx: TensorContext) -> Tensor:
    """Task arithmetic: θ_0 + λ·Σ w_i (θ_i − θ_0)."""
    if base is None:
        raise ValueError(f"{ctx.name}: task arithmetic needs a base model (θ_0)")
    # θ_0 + Σ c_i (θ_i − θ_0) = (1 − Σ c_i)·θ_0 + Σ c_i·θ_i with c_i = λ w_i / (Σ w if normalize):
    # the same numbers as the generalized kernel, without stacking n task vectors.
    total = float(sum(ctx.weights)) if config.normalize else 1.0
    coefs = [config.lambda_ * w / (total if abs(total) >= kernels.DIVISOR_EPS else 1.0) for w in ctx.weights]
    return kernels.weighted_sum(experts, coefs, start=base, start_coef=1.0 - sum(coefs))
