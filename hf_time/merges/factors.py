"""Pure tensor types and helpers of low-rank merging (no I/O, inputs never mutated).

Orientation: factors are kept as PEFT stores them for a linear layer, ``A`` of shape (r, in) and
``B`` of shape (out, r), and ``ΔW = scaling · B @ A`` has shape (out, in). Layers whose weight is
stored transposed (``fan_in_fan_out`` Conv1D, embeddings) are transposed by the callers that touch
base weights (:mod:`hf_time.lowrank.sources`), never here.

The signature of a ``lowrank`` registry method (:class:`hf_time.merges.registry.LowRankMethod`)::

    fn(modules: Sequence[LoraModule | None], config, ctx: TensorContext) -> ModuleResult

``modules`` holds one entry per expert for ONE adapted module (None where that expert does not
adapt it), ``ctx.name`` is the base tensor the module adapts and ``ctx.weights`` the expert
weights. The result's ``tensors`` use logical names: ``"A"``/``"B"`` for methods whose declared
``output`` is ``"adapter"``, free names for methods with their own format (``"rmm"``). ``stats`` are
JSON-able per-module figures for the lineage and card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

# Residual energy (relative) below which a matrix counts as lying in the span of given factors.
SPAN_RTOL = 1e-10


@dataclass(frozen=True)
class LoraModule:
    """One adapted module of one expert: ``ΔW = scaling · b @ a``.

    Attributes:
        a: the A factor, shape (r, in).
        b: the B factor, shape (out, r).
        scaling: PEFT's scaling of this module (``alpha / r`` or ``alpha / sqrt(r)`` with rsLoRA).
    """

    a: Tensor
    b: Tensor
    scaling: float = 1.0

    def __post_init__(self) -> None:
        if self.a.dim() != 2 or self.b.dim() != 2 or self.a.shape[0] != self.b.shape[1]:
            raise ValueError(f"LoRA factors must be A (r, in) and B (out, r), got {tuple(self.a.shape)} and {tuple(self.b.shape)}")

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of ΔW in factor orientation, (out, in)."""
        return int(self.b.shape[0]), int(self.a.shape[1])

    def delta(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """ΔW = scaling · B @ A as a fresh (out, in) tensor."""
        return torch.mm(self.b.to(dtype), self.a.to(dtype)).mul_(self.scaling)

    def scaled_b(self, factor: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
        """``factor · scaling · B`` (fresh): folding the scaling into B keeps ΔW = B' @ A exact."""
        return self.b.to(dtype).mul(factor * self.scaling)


@dataclass(frozen=True)
class ModuleResult:
    """What a low-rank method returns for one module.

    Attributes:
        tensors: output tensors by logical name (``"A"``, ``"B"`` for adapter outputs).
        stats: JSON-able figures for the lineage (energy kept, reconstruction errors...).
    """

    tensors: Mapping[str, Tensor]
    stats: Mapping[str, Any] = field(default_factory=dict)


def _orthonormal_columns(x: Tensor) -> Tensor:
    return torch.linalg.qr(x, mode="reduced").Q


def truncated_factors(matrix: Tensor, rank: int, *, span: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, float]:
    """Factor ``matrix`` (out, in) as B (out, rank) @ A (rank, in) by truncated SVD.

    The singular values are split evenly (B = U√S, A = √S Vᵀ), so the factors are balanced. When
    ``span = (cols, rows)`` is given (e.g. the stacked B's and A's of the experts) and ``matrix``
    lies in ``col(cols) ⊗ row(rows)`` up to :data:`SPAN_RTOL`, the SVD is computed exactly from the
    small core ``Qcᵀ M Qr`` instead of the whole matrix (linear merges of LoRA deltas always do).
    Missing ranks (``rank`` larger than the matrix rank or its sides) are zero columns/rows.

    Args:
        matrix: the dense matrix to factor (any float dtype; computed in float64 for the core path,
            float32 for the full SVD).
        rank: the output rank.
        span: optional (cols (out, R), rows (R, in)) spanning candidates.

    Returns:
        (B, A, energy_kept) with B, A float32 and ``energy_kept = Σ_{k<rank} s_k² / ‖M‖²_F``
        (1.0 for a zero matrix).
    """
    out_dim, in_dim = matrix.shape
    m64 = matrix.double()
    total = float((m64 * m64).sum())
    u = s = vh = None
    if span is not None and total > 0:
        qc = _orthonormal_columns(span[0].double())
        qr = _orthonormal_columns(span[1].double().T)
        core = qc.T @ m64 @ qr
        if total - float((core * core).sum()) <= SPAN_RTOL * total:
            uc, s, vch = torch.linalg.svd(core, full_matrices=False)
            u, vh = qc @ uc, vch @ qr.T
    if u is None:
        u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].double().clamp_min(0).sqrt()
    b = torch.zeros(out_dim, rank, dtype=torch.float32)
    a = torch.zeros(rank, in_dim, dtype=torch.float32)
    b[:, :k] = (u[:, :k].double() * root).float()
    a[:k] = (root[:, None] * vh[:k].double()).float()
    kept = float((s[:k].double() ** 2).sum())
    return b, a, (min(kept / total, 1.0) if total > 0 else 1.0)
