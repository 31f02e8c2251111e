"""ZipIt! (Stoica et al., ICLR 2024, https://arxiv.org/abs/2305.03053): merging features within and across
models, and the weight formula every merge of models of different inits here uses (pure tensor functions).

A *zip* of one slot says how the n_A + n_B features of two models become n* merged features: per
model e a merge matrix M_e [n*, n_e] (merged feature = average of its group's members) and an unmerge
U_e [n_e, n*] (each feature of e reads the merged feature of its group; one 1 per row). A linear map
``y_e = W_e x_e`` of every model becomes the merged map

    W* = Σ_e M_e,out · W_e · U_e,in        (biases and norm scales: b* = Σ_e M_e b_e)

so averaging after a permutation (Git Re-Basin) is the zip M_A = ½I, M_B = ½Pᵀ..., and naive averaging
is the zip with P = I (:func:`permutation_zip`, :func:`identity_zip`). ZipIt!'s own zip
(:func:`zipit_zip`) greedily pairs the most correlated features over the *joint* correlation matrix of
both models, so two features of one model may be merged when they are redundant:

1. take the most correlated pair of active features (any two, same model or not);
2. merge them: the new feature's correlation with every other is the minimum of its members', times
   α (so a merged feature is merged again only when it is still strongly correlated);
3. a model may merge its own features at most β·n/2 times (the reference code's budget); when it runs
   out, its within-model pairs are ruled out;
4. repeat until n* features remain.

Attention heads are not zipped (two heads of one model cannot become one without changing its
softmax): they are matched across models as whole heads (:mod:`hf_time.align.activation_matching`)
and averaged; this is the deviation from the paper, which zips CNN channels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from hf_time.align.spec import OUT, TensorSpec

_FORBIDDEN = -1e9  # a within-model pair beyond the budget: taken only if nothing else is left


@dataclass(frozen=True)
class Zip:
    """How one slot's features of every model become merged features.

    Attributes:
        merge: per model, M_e [n*, n_e] (rows: merged features; a row averages its group's members).
        unmerge: per model, U_e [n_e, n*] (one 1 per row: the merged feature each unit reads).
    """

    merge: tuple[torch.Tensor, ...]
    unmerge: tuple[torch.Tensor, ...]

    @property
    def width(self) -> int:
        return self.merge[0].shape[0]

    def unmerge_index(self, model: int) -> torch.Tensor:
        """U_e as an index: the merged feature each unit of model ``model`` reads."""
        u = self.unmerge[model]
        if not torch.equal(u.sum(1), torch.ones(u.shape[0], dtype=u.dtype)):
            raise ValueError("an unmerge must give every unit exactly one merged feature")
        return u.argmax(1)


def groups_zip(groups: Sequence[Sequence[tuple[int, int]]], sizes: Sequence[int]) -> Zip:
    """The zip of explicit groups: merged feature g averages the units ``(model, index)`` in ``groups[g]``."""
    n = len(groups)
    merge = [torch.zeros(n, s) for s in sizes]
    unmerge = [torch.zeros(s, n) for s in sizes]
    for g, members in enumerate(groups):
        for model, unit in members:
            merge[model][g, unit] = 1.0 / len(members)
            unmerge[model][unit, g] = 1.0
    return Zip(tuple(merge), tuple(unmerge))


def permutation_zip(perm: torch.Tensor) -> Zip:
    """Averaging after alignment: merged unit i = ½ (A_i + B_perm[i])."""
    n = perm.numel()
    return groups_zip([[(0, i), (1, int(perm[i]))] for i in range(n)], [n, n])


def identity_zip(n: int) -> Zip:
    """Naive averaging: merged unit i = ½ (A_i + B_i)."""
    return permutation_zip(torch.arange(n))


def zipit_zip(corr: torch.Tensor, n_a: int, *, alpha: float, beta: float, width: int | None = None) -> Zip:
    """ZipIt!'s greedy matching over the joint correlation of two models' features.

    Args:
        corr: [(n_a+n_b)², ...] correlation of the features [A, B] (within and across models).
        n_a: how many of them are model A's.
        alpha: factor on a merged feature's correlations (in (0, 1]).
        beta: share of merges that may pair features of one model: at most ⌊β·n/2⌋ per model.
        width: merged features wanted (default n_a).
    """
    total = corr.shape[0]
    n_b = total - n_a
    width = n_a if width is None else width
    sims = corr.to(torch.float32).clone()
    sims.fill_diagonal_(float("-inf"))
    origin = torch.tensor([0] * n_a + [1] * n_b)  # 0/1: pure features of A/B; 2: mixed
    members: dict[int, list[tuple[int, int]]] = {i: [(0, i) if i < n_a else (1, i - n_a)] for i in range(total)}
    budget = [int(beta * n_a / 2), int(beta * n_b / 2)]
    for model in (0, 1):
        if budget[model] == 0:
            _forbid_within(sims, origin, model)
    for _ in range(total - width):
        flat = int(torch.argmax(sims))
        i, j = sorted(divmod(flat, total))
        within = int(origin[i]) == int(origin[j]) and int(origin[i]) < 2
        members[i] += members.pop(j)
        merged = torch.minimum(sims[i], sims[j]) * alpha
        sims[i], sims[:, i] = merged, merged
        sims[j], sims[:, j] = float("-inf"), float("-inf")
        sims[i, i] = float("-inf")
        if within:
            model = int(origin[i])
            budget[model] -= 1
            if budget[model] <= 0:
                _forbid_within(sims, origin, model)
        else:
            origin[i] = 2
        origin[j] = -1
    return groups_zip([members[i] for i in sorted(members)], [n_a, n_b])


def _forbid_within(sims: torch.Tensor, origin: torch.Tensor, model: int) -> None:
    """Rule out pairs of two pure features of ``model`` (its budget is spent)."""
    idx = (origin == model).nonzero().squeeze(1)
    rows, cols = idx[:, None], idx[None, :]
    sims[rows, cols] = sims[rows, cols].clamp(max=_FORBIDDEN)


def _along(t: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` [n*, n] applied to ``axis`` of ``t`` (that axis has size n, becomes n*)."""
    return torch.movedim(torch.tensordot(matrix, t, dims=([1], [axis])), 0, axis)


def merge_tensor(tensors: Sequence[torch.Tensor], spec: TensorSpec, zips: Mapping[str, Zip]) -> torch.Tensor:
    """One merged tensor: Σ_e of model e's tensor with M_e on every ``out`` axis and U_eᵀ on every ``in`` axis.

    Axes whose slot has no zip (vocabulary, a pooler's output) are averaged as they are.
    """
    out = None
    for e, t in enumerate(tensors):
        t = t.to(torch.float32)
        scaled = False
        for axis, a in enumerate(spec.axes):
            if a is None or a.slot not in zips:
                continue
            z = zips[a.slot]
            t = _along(t, axis, z.merge[e] if a.role == OUT else z.unmerge[e].T)
            scaled = scaled or a.role == OUT
        if not scaled:  # no axis averages the models (e.g. only inputs): average here
            t = t / len(tensors)
        out = t if out is None else out + t
    return out
