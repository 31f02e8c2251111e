"""LoRA concatenation: merge adapters exactly by stacking their ranks.

For one module with experts i = 1..n (weights w_i, PEFT scalings s_i)::

    A = [A_1; A_2; …; A_n]                 (Σ r_i, in)
    B = [w_1 s_1 B_1, w_2 s_2 B_2, …]      (out, Σ r_i)
    B @ A = Σ_i w_i s_i B_i A_i = Σ_i w_i ΔW_i          (exact, no cross terms)

The output adapter therefore has scaling 1 (``lora_alpha = r``, no rsLoRA) and rank Σ r_i per
module. Unlike PEFT's factor-wise ``add_weighted_adapter`` (issues #3004, #643) it is exact in ΔW,
accepts different ranks and honours rsLoRA / rank_pattern / alpha_pattern scalings.

Removing expert i later is exact too: its block occupies ranks ``slices[i] = [start, end)`` of each
module (recorded per module in ``hf_time.json``); drop rows ``start:end`` of ``lora_A`` and columns
``start:end`` of ``lora_B``. An expert that does not adapt a module has no block there (slice None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hf_time.merges.factors import LoraModule, ModuleResult
from hf_time.merges.registry import TensorContext, param, register

STRICT_HELP = "error when the adapters target different modules (default: a module an adapter lacks has ΔW = 0)"


@dataclass(frozen=True)
class LoraCatConfig:
    strict: bool = param(False, STRICT_HELP)


@register("lora_cat", kind="lowrank", config=LoraCatConfig, output="adapter")
def lora_cat(modules: Sequence[LoraModule | None], config: LoraCatConfig, ctx: TensorContext) -> ModuleResult:
    """LoRA concatenation: stack the ranks of all adapters; ΔW = Σ w_i ΔW_i exactly, removable per expert."""
    blocks_a, blocks_b, slices = [], [], []
    start = 0
    for weight, module in zip(ctx.weights, modules):
        if module is None:
            slices.append(None)
            continue
        blocks_a.append(module.a.to(torch.float32))
        blocks_b.append(module.scaled_b(weight))
        slices.append([start, start + module.rank])
        start += module.rank
    if not blocks_a:
        raise ValueError(f"{ctx.name}: no expert adapts this module")
    return ModuleResult({"A": torch.cat(blocks_a, 0), "B": torch.cat(blocks_b, 1)}, {"rank": start, "slices": slices})
