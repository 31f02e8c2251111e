"""Permutations of a transformer's units, and applying them to tensors (pure functions, no I/O).

Convention (Git Re-Basin's ``get_permuted_param``): a permutation ``p`` of a slot maps the
*reference's* unit ``i`` to the *expert's* unit ``p[i]``; the expert in the reference's basis is
``expert.index_select(axis, p)`` on every axis of that slot. So ``p`` is what a linear assignment
over a cost ``C[i, j]`` (reference unit i vs expert unit j) returns as its column indices.

Attention is permuted only in ways that keep the function (:class:`HeadPerm`): whole key/value
groups with their query heads, query heads within a group, and within a head the same dims of Q
and K (never under RoPE) and of V and O. :meth:`HeadPerm.indices` turns that structure into the
plain index vectors of the ``q``/``k``/``v``/``o`` slots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import torch

from hf_time.align.spec import ArchSpec, HeadLayout, TensorSpec


def identity(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.long)


@dataclass(frozen=True)
class HeadPerm:
    """A function-preserving permutation of one block's attention.

    Attributes:
        groups: [KV] reference key/value group A <- expert group ``groups[A]``.
        queries: [KV, g] reference query head i of group A <- expert query head ``queries[A, i]`` of that group.
        qk_dims: [KV, hd] dims of the group's queries and key (identity under RoPE).
        vo_dims: [KV, hd] dims of the group's value and of ``o_proj``'s input for its query heads.
    """

    groups: torch.Tensor
    queries: torch.Tensor
    qk_dims: torch.Tensor
    vo_dims: torch.Tensor

    @classmethod
    def identity(cls, layout: HeadLayout) -> "HeadPerm":
        kv, g, hd = layout.kv_heads, layout.group, layout.head_dim
        return cls(identity(kv), identity(g).repeat(kv, 1), identity(hd).repeat(kv, 1), identity(hd).repeat(kv, 1))

    def indices(self, layout: HeadLayout) -> dict[str, torch.Tensor]:
        """Index vectors of the ``q``, ``k``, ``v`` (per kv head) and ``o`` (per query head) axes."""
        g, hd = layout.group, layout.head_dim
        expert_heads = self.groups[:, None] * g + self.queries  # [KV, g] expert query head of each reference one
        q = (expert_heads[:, :, None] * hd + self.qk_dims[:, None, :]).reshape(-1)
        o = (expert_heads[:, :, None] * hd + self.vo_dims[:, None, :]).reshape(-1)
        k = (self.groups[:, None] * hd + self.qk_dims).reshape(-1)
        v = (self.groups[:, None] * hd + self.vo_dims).reshape(-1)
        return {"q": q, "k": k, "v": v, "o": o}

    def equal(self, other: "HeadPerm") -> bool:
        return all(torch.equal(a, b) for a, b in zip(self.tensors(), other.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.groups, self.queries, self.qk_dims, self.vo_dims


@dataclass(frozen=True)
class Alignment:
    """All permutations mapping an expert onto a reference: the residual stream and, per block, MLP and heads."""

    res: torch.Tensor
    mlp: tuple[torch.Tensor, ...]
    heads: tuple[HeadPerm, ...]

    @classmethod
    def identity(cls, spec: ArchSpec) -> "Alignment":
        return cls(identity(spec.hidden), tuple(identity(spec.intermediate) for _ in range(spec.layers)),
                   tuple(HeadPerm.identity(spec.attention) for _ in range(spec.layers)))

    def indices(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """Slot name -> index vector, for every slot of ``spec``."""
        out = {"res": self.res}
        for i, (mlp, heads) in enumerate(zip(self.mlp, self.heads)):
            out[f"mlp.{i}"] = mlp
            out.update({f"{k}.{i}": v for k, v in heads.indices(spec.attention).items()})
        return out

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The compact form stored in ``alignment.safetensors`` (int32; a 7B model's is ~2.5 MB)."""
        out = {"res": self.res}
        for i, (mlp, h) in enumerate(zip(self.mlp, self.heads)):
            out[f"layers.{i}.mlp"] = mlp
            for name, t in zip(("groups", "queries", "qk_dims", "vo_dims"), h.tensors()):
                out[f"layers.{i}.heads.{name}"] = t
        return {k: v.to(torch.int32).contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], layers: int) -> "Alignment":
        """Inverse of :meth:`to_tensors`."""
        t = {k: v.to(torch.long) for k, v in tensors.items()}
        heads = tuple(HeadPerm(*(t[f"layers.{i}.heads.{n}"] for n in ("groups", "queries", "qk_dims", "vo_dims")))
                      for i in range(layers))
        return cls(t["res"], tuple(t[f"layers.{i}.mlp"] for i in range(layers)), heads)

    def digest(self) -> str:
        """sha256 over the compact form (names and int32 bytes, in a fixed order): what a lineage records."""
        h = hashlib.sha256()
        for name, t in sorted(self.to_tensors().items()):
            h.update(name.encode() + b"\0" + t.numpy().tobytes())
        return h.hexdigest()

    def moved(self) -> dict[str, float]:
        """Fraction of units each kind of permutation moves (0 = identity): a card's one-line summary."""
        def frac(ts):
            n = sum(t.numel() for t in ts)
            return round(sum(int((t != identity(t.shape[-1]).expand_as(t)).sum()) for t in ts) / max(n, 1), 4)

        return {"residual": frac([self.res]), "mlp": frac(self.mlp), "heads": frac([h.groups for h in self.heads]),
                "head_dims": frac([torch.cat([h.qk_dims, h.vo_dims]) for h in self.heads])}

    def equal(self, other: "Alignment") -> bool:
        return (torch.equal(self.res, other.res) and all(torch.equal(a, b) for a, b in zip(self.mlp, other.mlp))
                and all(a.equal(b) for a, b in zip(self.heads, other.heads)))


def permute_tensor(tensor: torch.Tensor, spec: TensorSpec, indices: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``tensor`` with every axis whose slot is in ``indices`` re-indexed (others are left as they are).

    Returns a new tensor (or ``tensor`` itself when nothing is permuted); the input is not modified.
    """
    out = tensor
    for axis, a in enumerate(spec.axes):
        if a is not None and a.slot in indices:
            out = out.index_select(axis, indices[a.slot])
    return out


def random_alignment(spec: ArchSpec, seed: int) -> Alignment:
    """A random function-preserving permutation of every slot (tests, benchmarks): heads, groups, query
    heads within groups, head dims (Q/K only without RoPE), MLP units and the residual stream."""
    g = torch.Generator().manual_seed(seed)
    a = spec.attention
    perm = lambda n: torch.randperm(n, generator=g)  # noqa: E731

    def heads():
        qk = torch.stack([perm(a.head_dim) for _ in range(a.kv_heads)]) if a.qk_free else \
            identity(a.head_dim).repeat(a.kv_heads, 1)
        return HeadPerm(perm(a.kv_heads), torch.stack([perm(a.group) for _ in range(a.kv_heads)]), qk,
                        torch.stack([perm(a.head_dim) for _ in range(a.kv_heads)]))

    return Alignment(perm(spec.hidden), tuple(perm(spec.intermediate) for _ in range(spec.layers)),
                     tuple(heads() for _ in range(spec.layers)))


def inverse(alignment: Alignment) -> Alignment:
    """The alignment undoing ``alignment`` (for every slot, the inverse permutation)."""
    inv = lambda p: torch.argsort(p, dim=-1)  # noqa: E731

    def heads(h: HeadPerm) -> HeadPerm:
        groups = inv(h.groups)
        # reference group A maps to expert group groups[A]; the inverse maps expert group B to A = groups^-1[B],
        # and the within-group perms of A become those of B, inverted.
        return HeadPerm(groups, inv(h.queries[groups]), inv(h.qk_dims[groups]), inv(h.vo_dims[groups]))

    return Alignment(inv(alignment.res), tuple(inv(m) for m in alignment.mlp), tuple(heads(h) for h in alignment.heads))
