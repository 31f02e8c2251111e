"""Activation matching (Git Re-Basin, Ainsworth et al. 2023, §3.1) for transformers.

Units are paired by how their activations correlate on the same data: for each permutation,

    P = argmax_P ⟨corr(Z_A, Z_B), P⟩,

with Z the features at that slot over every real token of the texts (Pearson correlation, as in the
reference code). Unlike weight matching this needs no alternation: every slot's features are read
from the unpermuted models. Here:

- the residual stream is one permutation: its cost is the *sum* of the correlations at every point
  where the residual stream is visible (after the embeddings and after each block);
- MLP units use the activations that enter the down projection;
- heads (deviation from the paper, which has no attention) are paired by the best dim-matched
  correlation of their context vectors (the input of ``o_proj``) with their values, summed over the
  head's dims (plus Q/K when their dims may be permuted), then groups/heads/dims follow as in
  :func:`~hf_time.align.assign.solve_heads`.
"""

from __future__ import annotations

from typing import Mapping

import torch

from hf_time.align.activations import CrossMoments
from hf_time.align.assign import HeadCosts, assign, assignment_value, solve_heads
from hf_time.align.perms import Alignment
from hf_time.align.spec import ArchSpec, HeadLayout
from hf_time.align.weight_matching import MatchResult


def _blocks(corr: torch.Tensor, units: int, hd: int) -> torch.Tensor:
    """[units·hd, units·hd] -> [a, b, i, j]: the hd×hd block of every unit pair."""
    return corr.reshape(units, hd, units, hd).permute(0, 2, 1, 3)


def head_costs_from_activations(stats: Mapping[str, CrossMoments], layer: int, layout: HeadLayout) -> HeadCosts:
    """Similarities of block ``layer``'s heads from activation correlations."""
    hd, g = layout.head_dim, layout.group
    vo_q = _blocks(stats[f"o.{layer}"].correlation(), layout.heads, hd)
    vo_kv = _blocks(stats[f"v.{layer}"].correlation(), layout.kv_heads, hd)
    qk_q = qk_kv = None
    if layout.qk_free:
        qk_q = _blocks(stats[f"q.{layer}"].correlation(), layout.heads, hd)
        qk_kv = _blocks(stats[f"k.{layer}"].correlation(), layout.kv_heads, hd)
    pair = torch.empty(layout.heads, layout.heads)
    for a in range(layout.heads):
        for b in range(layout.heads):
            block = vo_q[a, b] + vo_kv[a // g, b // g]
            if qk_q is not None:
                block = block + qk_q[a, b] + qk_kv[a // g, b // g]
            pair[a, b] = assignment_value(block)
    return HeadCosts(pair, qk_q, qk_kv, vo_q, vo_kv)


def activation_matching(spec: ArchSpec, stats: Mapping[str, CrossMoments]) -> MatchResult:
    """Permutations mapping the expert onto the reference from activation statistics.

    Args:
        spec: the layout both models share.
        stats: :class:`CrossMoments` at every point of
            :func:`~hf_time.align.activations.matching_points` (reference = A, expert = B).

    Returns:
        A :class:`~hf_time.align.weight_matching.MatchResult` (one pass, no weight similarities).
    """
    res_cost = sum(stats[f"res.{i}"].correlation() for i in range(-1, spec.layers))
    mlp = tuple(assign(stats[f"mlp.{i}"].correlation()) for i in range(spec.layers))
    heads = tuple(solve_heads(head_costs_from_activations(stats, i, spec.attention), spec.attention)
                  for i in range(spec.layers))
    return MatchResult(Alignment(assign(res_cost), mlp, heads), passes=1, converged=True)
