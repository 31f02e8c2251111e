"""Tiny transformers models built in-process for tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    kw.update(overrides)
    return LlamaConfig(**kw)


def save_tiny_llama(path: str | Path, seed: int = 0, *, base: str | Path | None = None, noise: float = 0.02,
                    dtype: torch.dtype = torch.float32, max_shard_size: str | None = None, **config_overrides) -> Path:
    """Save a tiny Llama. With ``base``, the model is the base plus seeded Gaussian noise (an "expert")."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    if base is not None:
        model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn(p.shape, generator=g))
    else:
        model = LlamaForCausalLM(tiny_llama_config(**config_overrides))
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return Path(path)
