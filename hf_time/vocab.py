"""Embeddings of models with different vocabularies, aligned to one output vocabulary (pure functions).

With ``tokenizer_source`` the output has its own vocabulary (the base's, the union of all inputs',
or one model's). Every tensor with a vocabulary axis (token embeddings, the LM head) is first
rearranged, model by model, so that row ``r`` holds the output token ``r``; then it is merged like
any other tensor. A token a model lacks gets a stand-in row, the same for every model that lacks
it, chosen as mergekit 0.1.5 does:

* present in exactly one model: that model's row;
* present in the base (when the base is an input of this tensor): the base's row;
* present in several models: their mean;
* present in none: zeros.

So merging a token known to one model only reproduces that model's embedding for it, whatever the
method, and a token the base knows keeps the base's embedding where an expert lacks it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

MISSING = -1


def permutation(out_vocab: Mapping[str, int], vocab: Mapping[str, int], vocab_size: int) -> list[int]:
    """For each output token id, the model's id of that token (:data:`MISSING` when it lacks it).

    Args:
        out_vocab: the output vocabulary, token -> id (ids 0..len−1).
        vocab: the model's tokenizer vocabulary, token -> id.
        vocab_size: the model's embedding rows; ids beyond it have no embedding and count as missing.
    """
    out = [MISSING] * len(out_vocab)
    for token, new_id in out_vocab.items():
        old = vocab.get(token)
        if old is not None and old < vocab_size:
            out[new_id] = old
    return out


def align(tensors: Sequence[Tensor], perms: Sequence[Sequence[int]], base: int | None = None) -> list[Tensor]:
    """The vocabulary rows (axis 0) of each model's tensor rearranged to the output vocabulary.

    Args:
        tensors: one tensor per model, vocabulary on axis 0 (other dimensions equal).
        perms: per model, :func:`permutation` to the output vocabulary (all the same length).
        base: the position of the base among the models, when it is one of them.

    Returns:
        Fresh tensors of ``len(perms[0])`` rows, in the promoted dtype of the inputs.

    Raises:
        ValueError: tensors whose non-vocabulary dimensions differ, or permutations of unequal length.
    """
    if len({tuple(t.shape[1:]) for t in tensors}) > 1:
        raise ValueError(f"vocabulary tensors differ beyond the vocabulary axis: {[list(t.shape) for t in tensors]}")
    size = len(perms[0])
    if any(len(p) != size for p in perms):
        raise ValueError("permutations to the output vocabulary differ in length")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    index = torch.tensor([list(p) for p in perms], dtype=torch.long)  # (models, out_vocab)
    present = index >= 0
    count = present.sum(0)
    row_shape = tuple(tensors[0].shape[1:])
    defaults = torch.zeros((size, *row_shape), dtype=dtype)
    for r in torch.nonzero(count < len(tensors)).flatten().tolist():
        have = torch.nonzero(present[:, r]).flatten().tolist()
        if not have:
            continue  # a token no model knows: zeros
        if len(have) == 1:
            donor = have[0]
        elif base is not None and base in have:
            donor = base
        else:
            acc = torch.zeros(row_shape, dtype=dtype)
            for m in have:  # summed in model order, then divided: mergekit's arithmetic, bit for bit
                acc = acc + tensors[m][index[m, r]].to(dtype)
            defaults[r] = acc / len(have)
            continue
        defaults[r] = tensors[donor][index[donor, r]].to(dtype)
    out = []
    for m, t in enumerate(tensors):
        rows = defaults.clone()
        own = present[m]
        rows[own] = t[index[m][own]].to(dtype)
        out.append(rows)
    return out
