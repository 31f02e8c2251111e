"""Router initialisation of an upcycled MoE: one vector per (layer, expert), from prompts or at random.

A router's logits are ``W·h`` for the hidden state ``h`` entering the MoE block, so a row of ``W``
that points where an expert's prompts put ``h`` sends those tokens to that expert. The modes are
mergekit-moe's:

* ``hidden`` (alias ``hidden_last``): the base model's hidden state at the last token of each
  prompt, per layer (the input of that layer), averaged over the expert's positive prompts, minus
  the same for its negative prompts, normalised per layer; ``hidden_avg``: the mean over the
  prompt's tokens instead of the last one;
* ``cheap_embed``: the sum of the prompts' token embeddings (no forward pass), normalised, the
  same for every layer;
* ``random``: standard normal; ``uniform_random``: U(−1/√d, 1/√d), torch.nn.Linear's own init.

Prompts are run one at a time (no padding), in float32; mergekit batches them in bfloat16. Random
routers come from a seeded generator, so the same config gives the same model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

NORM_EPS = 1e-8


def normalized(v: Tensor) -> Tensor:
    """``v`` scaled to unit L2 norm along its last axis (zero rows stay zero)."""
    return v / v.norm(p=2, dim=-1, keepdim=True).clamp(min=NORM_EPS)


def _ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([bos] if bos is not None else []) + list(ids)


def hidden_vector(model: Any, tokenizer: Any, prompts: Sequence[str], average: bool = False) -> Tensor:
    """Per layer, the mean over ``prompts`` of the hidden state entering that layer: (L, H).

    The state is the last token's, or with ``average`` the mean over the prompt's tokens.
    """
    rows = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([_ids(tokenizer, prompt)], device=device)
            out = model(input_ids=ids, output_hidden_states=True, return_dict=True)
            states = torch.stack(out.hidden_states[:-1])[:, 0].float().cpu()  # (L, tokens, H)
            rows.append(states.mean(1) if average else states[:, -1])
    return torch.stack(rows).mean(0)


def embed_vector(embed: Tensor, tokenizer: Any, prompts: Sequence[str], num_layers: int) -> Tensor:
    """The normalised sum of the prompts' token embeddings, repeated for every layer: (L, H)."""
    total = torch.zeros(embed.shape[1], dtype=torch.float32)
    for prompt in prompts:
        total += embed[torch.tensor(_ids(tokenizer, prompt))].float().sum(0)
    return normalized(total).unsqueeze(0).repeat(num_layers, 1)


def prompt_gates(experts: Sequence[Any], vector) -> Tensor:
    """Router rows from each expert's prompts: (L, E, H).

    Args:
        experts: objects with ``positive_prompts`` and ``negative_prompts``.
        vector: ``prompts -> (L, H)`` (:func:`hidden_vector` or :func:`embed_vector`, bound).
    """
    rows = []
    for e in experts:
        v = vector(e.positive_prompts)
        if e.negative_prompts:
            v = v - vector(e.negative_prompts)
        rows.append(normalized(v))
    return torch.stack(rows, dim=1)


def random_gates(mode: str, num_layers: int, num_experts: int, hidden: int, seed: int) -> Tensor:
    """Seeded random router rows: (L, E, H), standard normal or U(−1/√H, 1/√H)."""
    g = torch.Generator().manual_seed(seed)
    shape = (num_layers, num_experts, hidden)
    if mode == "random":
        return torch.randn(shape, generator=g)
    scale = math.sqrt(1.0 / hidden)
    return torch.rand(shape, generator=g) * 2 * scale - scale
