"""Similarity matrices of units from their weights (pure tensor functions): the costs weight matching assigns.

The units of a slot (residual dims, MLP units, head dims) are compared by their weight vectors: for
every tensor touching the slot, the slot's axis indexes the units and the other axis holds the
vector. Git Re-Basin's cost is ``C = Σ_t rows(W_A,t) · rows(π(W_B,t))ᵀ``, where π permutes the
expert's *other* axis by the current permutation of that axis's slot (the slot being solved is left
as it is). ``indices`` passes those current permutations.

With ``sketch=k`` each unit's vector is restricted to k random coordinates (shared out over the
tensors in proportion to their sizes; the same coordinates in both models, the expert's mapped
through π), each tensor's part scaled by √(m/k_t): an unbiased estimate of C at about k/m of the cost, and without reading more than k/m of each tensor into
float32 or permuting it (on a 2-core CPU converting and permuting a 7B block costs more than the
arithmetic). Matched units of a permuted copy get identical restricted vectors, so exactness is
kept; otherwise the error shrinks as 1/√k. Tensors outside the blocks are read once per matching,
so they are sampled 8× finer.
"""

from __future__ import annotations

import zlib
from typing import Iterator, Mapping, Sequence

import torch

from hf_time.align.assign import HeadCosts
from hf_time.align.spec import HeadLayout, TensorSpec

GLOBAL_FACTOR = 8  # tensors outside the blocks (embeddings, heads): sketched with 8x more coordinates


def tensor_seed(seed: int, name: str) -> int:
    """The sketch seed of one tensor: the same for both models, different across tensors."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _touching(tensors: Mapping[str, torch.Tensor], specs: Sequence[TensorSpec], slot: str) -> Iterator[tuple[TensorSpec, int]]:
    """Tensors with ``slot`` on exactly one axis (one on two axes cannot say which unit is which)."""
    for t in specs:
        axis = t.axis_of(slot)
        if axis is not None and t.name in tensors and sum(a is not None and a.slot == slot for a in t.axes) == 1:
            yield t, axis


def unit_vectors(tensor: torch.Tensor, spec: TensorSpec, axis: int, indices: Mapping[str, torch.Tensor],
                 sketch: int | None, seed: int) -> torch.Tensor:
    """The units along ``axis`` as float32 rows [n, m'] (a 1-D tensor gives one column).

    The other axis (2-D tensors) is permuted by ``indices`` when its slot is there, and with ``sketch``
    restricted to ``sketch`` random coordinates (chosen in the reference's basis) scaled by √(m/k).
    """
    if tensor.dim() == 1:
        return tensor.to(torch.float32)[:, None]
    if tensor.dim() != 2:
        raise ValueError(f"{spec.name}: only 1-D and 2-D tensors are compared, got {tuple(tensor.shape)}")
    other = 1 - axis
    m = tensor.shape[other]
    slot = spec.axes[other].slot if spec.axes[other] is not None else None
    positions = indices.get(slot) if slot is not None else None
    scale = 1.0
    if sketch is not None and m > sketch:
        coords = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:sketch].sort().values
        positions = coords if positions is None else positions[coords]
        scale = (m / sketch) ** 0.5
    if positions is not None:
        tensor = tensor.index_select(other, positions)
    rows = (tensor if axis == 0 else tensor.T).to(torch.float32)
    return rows.mul(scale) if scale != 1.0 else rows


def _shares(tensors: Mapping[str, torch.Tensor], pairs: Sequence[tuple[TensorSpec, int]], sketch: int | None) -> list:
    """Coordinates each tensor contributes to a unit's vector: ``sketch`` in all, in proportion to sizes."""
    if sketch is None:
        return [None] * len(pairs)
    sizes = [tensors[t.name].numel() // tensors[t.name].shape[axis] for t, axis in pairs]
    total = sum(sizes)
    return [max(1, round(sketch * m / total)) for m in sizes]


def slot_features(tensors: Mapping[str, torch.Tensor], specs: Sequence[TensorSpec], slot: str,
                  indices: Mapping[str, torch.Tensor], sketch: int | None, seed: int) -> torch.Tensor:
    """The units of ``slot`` as rows: the unit vectors of every tensor touching it, side by side."""
    pairs = list(_touching(tensors, specs, slot))
    return torch.cat([unit_vectors(tensors[t.name], t, axis, indices, k, tensor_seed(seed, t.name))
                      for (t, axis), k in zip(pairs, _shares(tensors, pairs, sketch))], dim=1)


def slot_cost(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], specs: Sequence[TensorSpec], slot: str,
              indices: Mapping[str, torch.Tensor], sketch: int | None, seed: int) -> torch.Tensor | None:
    """``C[i, j]``: similarity of reference unit i and expert unit j of ``slot``, summed tensor by tensor over
    ``specs`` present in both with one shape (None when there is none).

    Args:
        a, b: reference and expert tensors by name, as stored (any float dtype).
        indices: the expert's current permutations of the *other* slots (``slot`` itself is not applied).
    """
    total = None
    none: dict[str, torch.Tensor] = {}
    pairs = [(t, axis) for t, axis in _touching(a, specs, slot) if t.name in b and a[t.name].shape == b[t.name].shape]
    for (t, axis), k in zip(pairs, _shares(a, pairs, sketch)):
        s = tensor_seed(seed, t.name)
        part = unit_vectors(a[t.name], t, axis, none, k, s) @ unit_vectors(b[t.name], t, axis, indices, k, s).T
        total = part if total is None else total.add_(part)
    return total


def head_costs(ref: Mapping[str, torch.Tensor], exp: Mapping[str, torch.Tensor], specs: Sequence[TensorSpec],
               layer: int, layout: HeadLayout, indices: Mapping[str, torch.Tensor], sketch: int | None,
               seed: int) -> HeadCosts:
    """Similarities of block ``layer``'s heads from their weights (``indices``: the expert's residual permutation).

    Head pairs are scored by the cosine of their bilinear forms M = X_qᵀ X_kv (QK: W_Qᵀ W_K; OV: W_O W_V,
    biases as an extra input column), using ⟨M_a, M_b⟩ = Σ (X_qa X_qbᵀ) ⊙ (X_kva X_kvbᵀ): invariant to any
    change of a head's inner basis, so heads are paired before their dims are.
    """
    hd, g = layout.head_dim, layout.group
    none: dict[str, torch.Tensor] = {}

    def grams(slot: str, units: int):
        fa = slot_features(ref, specs, f"{slot}.{layer}", none, sketch, seed).reshape(units, hd, -1)
        fb = slot_features(exp, specs, f"{slot}.{layer}", indices, sketch, seed).reshape(units, hd, -1)
        cross = (fa.reshape(units * hd, -1) @ fb.reshape(units * hd, -1).T).reshape(units, hd, units, hd)
        return cross.permute(0, 2, 1, 3), fa @ fa.transpose(1, 2), fb @ fb.transpose(1, 2)

    def form_cosine(per_q, per_kv):
        cross_kv = per_kv[0].repeat_interleave(g, 0).repeat_interleave(g, 1)
        dot = (per_q[0] * cross_kv).sum((2, 3))
        na = (per_q[1] * per_kv[1].repeat_interleave(g, 0)).sum((1, 2))
        nb = (per_q[2] * per_kv[2].repeat_interleave(g, 0)).sum((1, 2))
        return dot / (na[:, None] * nb[None, :]).clamp_min(1e-30).sqrt()

    q, k = grams("q", layout.heads), grams("k", layout.kv_heads)
    o, v = grams("o", layout.heads), grams("v", layout.kv_heads)
    pair = form_cosine(q, k) + form_cosine(o, v)
    free = layout.qk_free
    return HeadCosts(pair, q[0] if free else None, k[0] if free else None, o[0], v[0])
