"""LoRA merge in ΔW space, re-factored to rank r by truncated SVD.

For one module: every expert's ΔW_i = s_i B_i A_i (0 where an expert does not adapt the module) is a
task vector; any dense method of the registry merges them with base 0 (so ``ties``, ``dare_ties``,
``magmax``... act on ΔW exactly as they act on τ = θ_i − θ_0 in a dense merge); the merged ΔW is
then factored as B @ A of rank ``rank`` by truncated SVD, with the singular values split evenly
between the factors. The energy kept, Σ_{k<r} σ_k² / ‖ΔW‖², is reported per module.

When the merged ΔW lies in the span of the experts' factors (linear methods: task arithmetic,
linear), the SVD is computed exactly from a small core, so ``rank >= Σ r_i`` reproduces the dense
merge to float precision at any model size. Sparsifying methods (TIES, DARE...) give full-rank ΔW;
their SVD is a full one per module. The output adapter has scaling 1 (``lora_alpha = r``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from hf_time.errors import ConfigError
from hf_time.merges.factors import LoraModule, ModuleResult, truncated_factors
from hf_time.merges.lora_cat import STRICT_HELP
from hf_time.merges.registry import MethodSpec, TensorContext, get, param, register


@dataclass(frozen=True)
class LoraSvdConfig:
    rank: int | None = param(None, "rank of the output adapter (default: the largest input rank of each module)", ge=1)
    method: str = param("task_arithmetic", "dense method merging the ΔW_i (any of `hf-time ls --kind dense`)")
    method_params: str = param("", "that method's parameters as 'k=v,k=v', e.g. 'density=0.2,lambda=1'")
    strict: bool = param(False, STRICT_HELP)


def check_inner(config: LoraSvdConfig, n_experts: int | None) -> list[str]:
    """Problems with the inner dense method and its parameters (checked before anything runs)."""
    try:
        inner_method(config.method, config.method_params)
    except ConfigError as e:
        return list(e.problems)
    except KeyError as e:  # UnknownMethodError
        return [str(e)]
    return []


@functools.lru_cache(maxsize=32)
def inner_method(name: str, params: str) -> tuple[MethodSpec, Any]:
    """The dense method and its config that ``lora_svd`` runs in ΔW space (parsed once).

    Raises:
        UnknownMethodError: unknown name.
        ConfigError: not a dense method, malformed or invalid parameters, or global thresholds
            (they need statistics over the whole model, which a per-module merge does not have).
    """
    spec = get(name)
    if spec.kind != "dense":
        raise ConfigError(f"lora_svd merges ΔW with a dense method; {name!r} is of kind {spec.kind!r}")
    pairs, problems = {}, []
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"method_params: expected 'k=v', got {item!r}")
        else:
            pairs[key.strip()] = value.strip()
    if problems:
        raise ConfigError.from_problems("invalid parameters for 'lora_svd'", problems)
    config = spec.make_config(pairs)
    if getattr(config, "threshold_scope", "tensor") == "global":  # a parameter of the inner method, if it has it
        raise ConfigError("lora_svd: threshold_scope=global is not supported in ΔW space; use threshold_scope=tensor")
    return spec, config


@register("lora_svd", kind="lowrank", config=LoraSvdConfig, output="adapter", check=check_inner)
def lora_svd(modules: Sequence[LoraModule | None], config: LoraSvdConfig, ctx: TensorContext) -> ModuleResult:
    """Merge ΔW_i with any dense method, then re-factor to rank r by truncated SVD (energy kept reported)."""
    spec, inner = inner_method(config.method, config.method_params)
    present = [m for m in modules if m is not None]
    if not present:
        raise ValueError(f"{ctx.name}: no expert adapts this module")
    shape, device = present[0].shape, present[0].a.device
    deltas = [m.delta() if m is not None else torch.zeros(shape, device=device) for m in modules]
    base = torch.zeros(shape, device=device) if spec.uses_base else None
    # The same tensor name (and the inner method's own seed, for DARE) gives the masks of a dense merge.
    inner_ctx = TensorContext(name=ctx.name, weights=ctx.weights, layer=ctx.layer, num_layers=ctx.num_layers)
    merged = spec.fn(base, deltas, inner, inner_ctx)
    rank = config.rank or max(m.rank for m in present)
    span = (torch.cat([m.b for m in present], 1), torch.cat([m.a for m in present], 0))
    b, a, kept = truncated_factors(merged, rank, span=span)
    return ModuleResult({"A": a, "B": b}, {"rank": rank, "energy_kept": round(kept, 8)})
