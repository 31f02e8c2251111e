"""Opening models for the data-aware methods: the transformers class their config names, and the tokenizer check.

A leaf module (no pipeline imports), so that the dense executor's ``--align`` can use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from hf_time.align.spec import ArchSpec
from hf_time.errors import ConfigError, IncompatibleExpertsError

# Files whose content decides what a token id means: two models aligned or merged must agree on them.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def check_tokenizers(folders: Sequence[Path], names: Sequence[str]) -> None:
    """Models merged or compared on data must read token ids the same way.

    Raises:
        IncompatibleExpertsError: a tokenizer file both folders hold differs (named).
    """
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for f in TOKENIZER_FILES:
        present = [(d, n) for d, n in zip(folders, names) if (d / f).is_file()]
        if len(present) > 1 and len({digest(d / f) for d, _ in present}) > 1:
            raise IncompatibleExpertsError(f"{f} differs between {present[0][1]} and {present[1][1]}: the models do not "
                                           "share a tokenizer, so their embeddings cannot be aligned; use models "
                                           "trained with one tokenizer", tensor=None)


def load_model(folder: Path, spec: ArchSpec) -> torch.nn.Module:
    """The model class its config names (so module names are the checkpoint's), float32, eval mode."""
    import transformers

    cls = getattr(transformers, spec.architecture, None)
    if cls is None:
        raise ConfigError(f"transformers has no class {spec.architecture!r} (from {folder}/config.json)")
    return cls.from_pretrained(folder, dtype=torch.float32).eval()
