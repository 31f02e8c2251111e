"""``tokenizer_source`` and ``chat_template``: the output's tokenizer, and the vocabulary its embeddings follow.

Planned before any network call (:func:`plan_tokenizer`: which source, which chat template), built
once the inputs' tokenizer files are on disk (:func:`build_vocab`), as mergekit 0.1.5 builds it:

* ``base``: the base's tokenizer;
* ``union``: the base's tokenizer plus, in input order, every token another input knows and the
  base does not (their added tokens last, with their settings). New tokens are appended in each
  input's id order; mergekit appends them in the iteration order of a hash map, which changes from
  run to run, so its ids for new tokens are not reproducible (each token's embedding is the same);
* a model reference (one of the merge's inputs): that model's tokenizer.

Each input's embedding rows are then aligned to that vocabulary (:mod:`hf_time.vocab`) and the
output config's ``vocab_size`` is the vocabulary's size. ``chat_template`` is a Jinja template,
or ``auto``: the template most inputs share.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from hf_time.errors import ConfigError
from hf_time.merges import DenseMethod, MethodSpec

logger = logging.getLogger(__name__)

SOURCES = ("base", "union")
# Files that make up a tokenizer; the carried base's are replaced by the output tokenizer's.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "sentencepiece.bpe.model", "spiece.model")


@dataclass(frozen=True)
class TokenizerPlan:
    """The output tokenizer a merge writes.

    Attributes:
        source: ``base``, ``union`` or ``model`` (one input's), or None (only a chat template is set).
        model: with ``model``, the input's index (0: the base, i: expert i − 1).
        chat_template: a Jinja template, ``auto``, or None (the source's own).
    """

    source: str | None
    model: int | None = None
    chat_template: str | None = None

    @property
    def aligns_vocab(self) -> bool:
        return self.source is not None

    def recorded(self, refs: Sequence[str]) -> dict[str, Any]:
        """The lineage's form: ``tokenizer_source`` (a pinned ref for a model) and ``chat_template``."""
        out: dict[str, Any] = {}
        if self.source is not None:
            out["tokenizer_source"] = refs[self.model] if self.source == "model" else self.source
        if self.chat_template is not None:
            out["chat_template"] = self.chat_template
        return out


def plan_tokenizer(method: MethodSpec, config: Any, problems: list[str]) -> TokenizerPlan | None:
    """The request's tokenizer options, checked (no network). None when it sets neither."""
    source, template = config.tokenizer_source, config.chat_template
    if source is None and template is None:
        return None
    if not isinstance(method, DenseMethod):
        problems.append(f"tokenizer_source / chat_template apply to dense merges of full models; {method.name} is a "
                        f"{method.kind} method")
        return None
    if template is not None and template != "auto" and "{" not in template:
        problems.append(f"chat_template: {template!r} is neither a Jinja template nor 'auto' (hf_time ships no named "
                        "templates; paste the template itself)")
    if source is None or source in SOURCES:
        return TokenizerPlan(source, None, template)
    refs = [config.base, *(e.ref for e in config.experts)]
    if source not in refs:
        problems.append(f"tokenizer_source: {source!r} is not one of the merge's models ({', '.join(refs)}); use base, "
                        "union, or one of them (hf_time pins and records every model it reads)")
        return None
    return TokenizerPlan("model", refs.index(source), template)


@dataclass(frozen=True)
class OutputVocab:
    """The built output tokenizer and, per input, its vocabulary and embedding rows."""

    tokenizer: Any
    vocab: Mapping[str, int]
    inputs: tuple[tuple[Mapping[str, int], int], ...]  # per input: (tokenizer vocabulary, embedding rows)


def _load(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, use_fast=True)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"tokenizer_source needs every input's tokenizer, but {folder} has none that loads "
                          f"({type(e).__name__}: {e})") from None


def _union(base_tok: Any, toks: Sequence[Any], sizes: Sequence[int]) -> Any:
    """The base tokenizer extended with every other input's tokens, in input order (mergekit's union)."""
    from transformers import AutoTokenizer

    vocab: dict[str, None] = {}
    added: dict[str, Any] = {}
    for tok, size in zip(toks, sizes):
        specials = tok.added_tokens_decoder
        special_texts = {info.content for info in specials.values()}
        for text, idx in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
            if idx < size and text not in special_texts:
                vocab.setdefault(text, None)
        for idx, info in sorted(specials.items()):
            if idx < size:
                added.setdefault(info.content, info)
    with tempfile.TemporaryDirectory() as tmp:  # a copy: the base's own tokenizer object stays untouched
        base_tok.save_pretrained(tmp)
        out = AutoTokenizer.from_pretrained(tmp, use_fast=True)
    known = base_tok.get_vocab()
    for text in vocab:
        if text not in added and text not in known:
            out.add_tokens(text)
    for info in added.values():
        out.add_tokens(info)
    return out


def build_vocab(plan: TokenizerPlan, folders: Sequence[Path], configs: Sequence[Mapping | None]) -> OutputVocab:
    """The output tokenizer of ``plan`` from the inputs' folders (base first) and their configs.

    Raises:
        ConfigError: an input without a loadable tokenizer, or a base tokenizer with tokens beyond its
            embedding rows (hf_time does not strip them).
    """
    toks = [_load(f) for f in folders]
    sizes = [int((c or {}).get("vocab_size") or len(t.get_vocab())) for c, t in zip(configs, toks)]
    beyond = sorted(i for i in toks[0].get_vocab().values() if i >= sizes[0])
    if beyond:
        raise ConfigError(f"the base tokenizer has {len(beyond)} token(s) with ids >= its vocab_size {sizes[0]}; "
                          "tokenizer_source cannot align such a vocabulary (mergekit strips them; hf_time does not)")
    if plan.source == "union":
        out = _union(toks[0], toks, sizes)
    elif plan.source == "model":
        out = toks[plan.model]
    else:
        out = toks[0]
    template = plan.chat_template
    if template == "auto":
        found = [t.chat_template.strip() for t in toks if isinstance(getattr(t, "chat_template", None), str)]
        template = Counter(found).most_common(1)[0][0] if found else None
    if template is not None:
        out.chat_template = template
    return OutputVocab(out, dict(out.get_vocab()), tuple((dict(t.get_vocab()), s) for t, s in zip(toks, sizes)))


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Replace the carried tokenizer files in ``folder`` with ``tokenizer``'s."""
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(folder)
