"""Passthrough: one input's tensor, unchanged (or scaled): the method behind layer stacking.

Reference: mergekit's ``passthrough`` (https://github.com/arcee-ai/mergekit), used with ``slices``
of one source each to stack layer ranges of one or more models into a deeper model
("frankenmerges", e.g. SOLAR's depth up-scaling, https://arxiv.org/abs/2312.15166). Which layers
go where is the slices' business (:mod:`hf_time.pipeline.layout`); the method itself only copies.

``scale`` (per expert, as in mergekit) multiplies the tensor; a filter such as
``[{filter: o_proj, value: 0.5}, {value: 1}]`` damps the residual writes of duplicated layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from hf_time.merges.registry import TensorContext, param, register


@dataclass(frozen=True)
class PassthroughConfig:
    scale: float = param(1.0, "multiply the tensor by this (1: copy it as is)", per_expert=True)


@register(
    "passthrough",
    kind="dense",
    config=PassthroughConfig,
    paper="https://arxiv.org/abs/2312.15166",
    uses_base=False,
    min_experts=1,
    max_experts=1,
    uses_weights=False,
    native_inputs=True,
)
def passthrough(base: Tensor | None, experts: Sequence[Tensor], config: PassthroughConfig, ctx: TensorContext) -> Tensor:
    """Copy one input's tensor, optionally scaled (layer stacking with ``slices``)."""
    if len(experts) != 1:
        raise ValueError(f"{ctx.name}: passthrough takes exactly one input per tensor, got {len(experts)}")
    scale = ctx.per_expert("scale", config.scale)[0]
    # A fresh float32 tensor (the engine reuses its input buffers); bf16 -> float32 -> bf16 is exact.
    out = experts[0].to(torch.promote_types(experts[0].dtype, torch.float32), copy=True)
    return out if scale == 1.0 else out.mul_(scale)
