"""Weight matching (Git Re-Basin, Ainsworth et al. 2023, https://arxiv.org/abs/2209.04836) for transformers.

Git Re-Basin finds the permutations π of an expert B that maximise the total inner product with a
reference A,

    max_π  Σ_tensors ⟨W_A, π(W_B)⟩_F,

by coordinate ascent: each permutation in turn is the solution of a linear assignment
``max_P ⟨C, P⟩`` with ``C = Σ_{tensors t touching it} W_A,t · π_{-}(W_B,t)ᵀ`` (the tensor's axis of
that permutation moved first and flattened; its other axes permuted by the current π), until
nothing changes. Here:

- The residual stream is one permutation shared by all blocks; its cost sums every tensor with a
  residual axis (embeddings, norms, every block, the heads). Tensors outside the blocks have no
  other permuted axis, so they are computed once and, before the first pass, give the starting
  residual permutation (the vocabulary axis of the embeddings anchors it: for permuted copies it
  is already exact).
- One pass streams the blocks: block L is read from both models, its MLP units and heads are
  solved given the residual permutation, and its share of the residual cost is added with those
  solutions applied. The pass ends with a new residual permutation; when it equals the previous
  one, every permutation is optimal given the others (a fixed point of the coordinate ascent) and
  matching stops. Memory is one block of each model plus the d×d residual cost, so a 7B model is
  matched block by block.
- Attention (deviation from the paper, which has no heads): head pairs are scored by the cosine of
  their bilinear forms, ``W_Qᵀ W_K`` and ``W_O W_V`` (biases as an extra input column), which do not
  depend on a head's inner basis; groups/heads follow by linear assignment
  (:func:`~hf_time.align.assign.solve_heads`), then the dims inside matched heads maximise the
  paper's objective (Q/K dims only without RoPE). For permuted copies every score is maximal at the
  true pairing, so the result is exact.
- ``sketch=k`` (optional, an hf_time addition): each unit's weight vector is compared on k random
  coordinates only (:mod:`hf_time.align.costs`): an unbiased estimate of every cost at about k/m of
  the arithmetic, reading only those coordinates of each tensor into float32. For permuted copies
  the sampled vectors of matched units are identical, so exactness is kept; otherwise the estimate's
  error shrinks as 1/√k. Without it (the default) costs are exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from hf_time.align.assign import assign, solve_heads
from hf_time.align.config import MatchingConfig
from hf_time.align.costs import GLOBAL_FACTOR, head_costs, slot_cost
from hf_time.align.perms import Alignment, permute_tensor
from hf_time.align.spec import ArchSpec, TensorSpec

logger = logging.getLogger(__name__)


class TensorSource(Protocol):
    """Where tensors are read from, one at a time (:class:`hf_time.io.Checkpoint` is one)."""

    def get(self, name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class MatchResult:
    """What a matching found.

    Attributes:
        alignment: the permutations (expert -> reference basis).
        passes: passes over the blocks (weight matching) or 1 (activation matching).
        converged: the residual permutation stopped changing before ``max_iter``.
        similarity_before / similarity_after: cosine between the two models' flattened weights
            without and with the permutations (weight matching; None for activation matching).
    """

    alignment: Alignment
    passes: int
    converged: bool
    similarity_before: float | None = None
    similarity_after: float | None = None

    def record(self, method: str) -> dict:
        """What a lineage says about this matching: enough to verify the saved permutations and judge them."""
        out = {"method": method, "sha256": self.alignment.digest(), "moved": self.alignment.moved(),
               "passes": self.passes, "converged": self.converged}
        if self.similarity_before is not None:
            out["weight_cosine"] = {"before": round(self.similarity_before, 6), "after": round(self.similarity_after, 6)}
        return out


def _load(source: TensorSource, specs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
    return {t.name: source.get(t.name) for t in specs}  # as stored: the costs convert what they use


class _Similarity:
    """Running ⟨A, B⟩, ‖A‖², ‖B‖² (the cosine between the models' flattened weights)."""

    def __init__(self):
        self.dot = self.aa = self.bb = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor, *, dot_only: bool = False) -> None:
        a, b = a.reshape(-1).to(torch.float32), b.reshape(-1).to(torch.float32)
        self.dot += float(a @ b)
        if not dot_only:
            self.aa += float(a @ a)
            self.bb += float(b @ b)

    def cosine(self, dot: float | None = None) -> float:
        return (self.dot if dot is None else dot) / max((self.aa * self.bb) ** 0.5, 1e-30)


def weight_matching(spec: ArchSpec, ref: TensorSource, expert: TensorSource, config: MatchingConfig = MatchingConfig(),
                    *, shared: set[str] | None = None, progress: bool = True) -> MatchResult:
    """Permutations mapping ``expert`` onto ``ref`` by weight matching (no data).

    Args:
        spec: the layout both models share (checked beforehand: same body shapes).
        ref, expert: where their tensors are read, one block at a time.
        config: ``max_iter`` passes at most; ``sketch`` coordinates (None: exact costs); ``seed``.
        shared: tensor names present with one shape in both (default: every tensor of ``spec``); task
            heads outside it are not compared.
        progress: show a progress bar per pass.

    Returns:
        A :class:`MatchResult`; with ``sketch`` the weight similarities are not computed (None): that
        would read every tensor in full, which is what sketching avoids.
    """
    shared = set(spec.tensors) if shared is None else shared
    k, seed = config.sketch, config.seed
    exact = k is None
    glob = [t for t in spec.global_tensors() if t.name in shared]
    ga, gb = _load(ref, glob), _load(expert, glob)
    res_global = slot_cost(ga, gb, glob, "res", {}, None if exact else k * GLOBAL_FACTOR, seed)
    res_global = torch.zeros(spec.hidden, spec.hidden) if res_global is None else res_global
    res = assign(res_global)
    start = Alignment.identity(spec)
    mlp, heads = list(start.mlp), list(start.heads)
    sim = _Similarity()  # norms and the unpermuted dot product, from the first pass
    if exact:
        for t in glob:
            sim.add(ga[t.name], gb[t.name])
    del ga, gb  # embeddings are as large as a block: read again at the end rather than held through the passes
    converged, passes, inner_dot = False, 0, 0.0
    for passes in range(1, config.max_iter + 1):
        layers_cost = torch.zeros(spec.hidden, spec.hidden)
        inner_dot = 0.0  # ⟨A, π(B)⟩ of the block tensors without a residual axis (biases)
        bar = tqdm(range(spec.layers), desc=f"weight matching, pass {passes}: blocks", unit="block", disable=not progress,
                   leave=False)
        for layer in bar:
            specs = [t for t in spec.layer_tensors(layer) if t.name in shared]
            a, b = _load(ref, specs), _load(expert, specs)
            if passes == 1 and exact:
                for t in specs:
                    sim.add(a[t.name], b[t.name])
            current = {"res": res}  # the block's own units are solved given the residual permutation
            mlp[layer] = assign(slot_cost(a, b, specs, f"mlp.{layer}", current, k, seed))
            heads[layer] = solve_heads(head_costs(a, b, specs, layer, spec.attention, current, k, seed), spec.attention)
            inner = {key: v for key, v in Alignment(res, tuple(mlp), tuple(heads)).indices(spec).items()
                     if key != "res" and key.endswith(f".{layer}")}
            layers_cost.add_(slot_cost(a, b, specs, "res", inner, k, seed))
            if exact:
                inner_dot += sum(float(a[t.name].reshape(-1).to(torch.float32)
                                       @ permute_tensor(b[t.name], t, inner).reshape(-1).to(torch.float32))
                                 for t in specs if t.axis_of("res") is None)
            del a, b
        new_res = assign(res_global + layers_cost)
        logger.info("weight matching pass %d: %d residual dims moved", passes, int((new_res != res).sum()))
        if torch.equal(new_res, res):
            converged = True
            break
        if passes < config.max_iter:  # else keep the residual permutation the blocks were solved for
            res = new_res
    alignment = Alignment(res, tuple(mlp), tuple(heads))
    if not exact:
        return MatchResult(alignment, passes, converged)
    # ⟨A, π(B)⟩ of the block tensors with a residual axis is Σ_i C[i, res_i] of their (last) residual cost.
    after = _Similarity()
    ga, gb = _load(ref, glob), _load(expert, glob)
    for t in glob:
        after.add(ga[t.name], permute_tensor(gb[t.name], t, {"res": res}), dot_only=True)
    dot = after.dot + inner_dot + float(layers_cost[torch.arange(spec.hidden), res].sum())
    return MatchResult(alignment, passes, converged, sim.cosine(), sim.cosine(dot))


def apply_alignment(spec: ArchSpec, tensors: Mapping[str, torch.Tensor], alignment: Alignment) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint in the reference's basis (tensors outside ``spec``, e.g. integer buffers,
    are returned unchanged). Pure: the inputs are not modified."""
    idx = alignment.indices(spec)
    return {name: permute_tensor(t, spec.tensors[name], idx) if name in spec.tensors else t for name, t in tensors.items()}

