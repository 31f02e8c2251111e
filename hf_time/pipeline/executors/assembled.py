"""Assembled outputs: engine inputs that read each output tensor from its place, vocabularies aligned.

When a dense merge has ``slices`` or a ``tokenizer_source``, its output is not tensor-for-tensor the
base: layers come from ranges of several models and are renumbered, and embeddings are realigned
to another vocabulary. The engine needs neither fact: it streams names from its base input and
calls one op per name. Here each engine input becomes a :class:`PlacedSource`, a weight source
whose names are the output's and whose tensors are read from the (model, tensor) the
:class:`~hf_time.pipeline.layout.Layout` gives, rows aligned to the output vocabulary where the
tensor has one (:class:`VocabAligner`). :func:`finish_config` then writes the output config: the
layer count and per-layer lists of the stacked layers, and the new vocabulary size.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from hf_time.io import TensorInfo
from hf_time.layers import stacked_config
from hf_time.pipeline.layout import Layout
from hf_time.vocab import align, permutation


class VocabAligner:
    """Per output tensor with a vocabulary axis, every engine input's rows in output-vocabulary order.

    The stand-in row of a token a model lacks depends on the other models' rows, so all inputs of
    one tensor are aligned together once and handed out slot by slot (reads come one tensor at a
    time; the last tensor is cached).

    Args:
        layout: the output layout.
        sources: per model index, its weight source.
        perms: per model index, the permutation to the output vocabulary (None: not an input).
        keys: per model index, what identifies the model (a model read twice counts once).
        base: the key of the base, whose row stands in for a token it knows.
    """

    def __init__(self, layout: Layout, sources: Sequence[Any], perms: Sequence[list[int] | None],
                 keys: Sequence[str], base: str):
        self.layout, self.sources, self.perms, self.keys, self.base = layout, sources, perms, keys, base
        self.size = len(next(p for p in perms if p is not None))
        self._lock = threading.Lock()
        self._cached: tuple[str, list[torch.Tensor]] | None = None

    def aligned(self, name: str, slot: int) -> torch.Tensor:
        with self._lock:
            if self._cached is None or self._cached[0] != name:
                self._cached = (name, self._align(name))
            return self._cached[1][slot]

    def _align(self, name: str) -> list[torch.Tensor]:
        inputs = self.layout.places[name].inputs
        groups: dict[str, tuple[int, str]] = {}
        for m, src in inputs:
            groups.setdefault(self.keys[m], (m, src))
        order = list(groups)
        tensors = [self.sources[m].get(src) for m, src in groups.values()]
        rows = align(tensors, [self.perms[m] for m, _ in groups.values()],
                     order.index(self.base) if self.base in order else None)
        return [rows[order.index(self.keys[m])] for m, _ in inputs]


class PlacedSource:
    """Engine input ``slot`` of an assembled output (a :class:`hf_time.engine.WeightSource`).

    Its names are the output's; each is read from ``layout.places[name].inputs[slot]``. Its infos give
    the stored dtype of what it reads and the output's shape where rows are realigned, which is what
    the engine sizes its buffers by.
    """

    def __init__(self, slot: int, layout: Layout, sources: Sequence[Any], aligner: VocabAligner | None):
        self.slot, self.layout, self.sources, self.aligner = slot, layout, sources, aligner
        infos = {}
        for name, place in layout.places.items():
            m, src = place.inputs[slot]
            info = sources[m].infos[src]
            shape = info.shape
            if aligner is not None and name in layout.vocab:
                shape = (aligner.size, *info.shape[1:])
            infos[name] = TensorInfo(name, info.dtype, tuple(shape))
        self._infos = infos

    @property
    def infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def get(self, name: str) -> torch.Tensor:
        if self.aligner is not None and name in self.layout.vocab:
            return self.aligner.aligned(name, self.slot).clone()
        m, src = self.layout.places[name].inputs[self.slot]
        return self.sources[m].get(src)

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor:
        if self.aligner is not None and name in self.layout.vocab:
            return self.aligner.aligned(name, self.slot)
        m, src = self.layout.places[name].inputs[self.slot]
        return self.sources[m].read_into(src, buffer)


def placed_sources(layout: Layout, sources: Sequence[Any], slots: int, *, vocab: Mapping[str, int] | None = None,
                   input_vocabs: Sequence[tuple[Mapping[str, int], int]] | None = None,
                   keys: Sequence[str] = (), base_key: str = "") -> list[PlacedSource]:
    """One :class:`PlacedSource` per engine input (the base first).

    Args:
        layout: the output layout.
        sources: per model index (0: the base), its opened weight source.
        slots: the number of engine inputs.
        vocab: the output vocabulary, when embeddings are realigned to it.
        input_vocabs: per model index, its tokenizer vocabulary and embedding rows.
        keys, base_key: what identifies each model, and the base (see :class:`VocabAligner`).
    """
    aligner = None
    if vocab is not None and layout.vocab:
        perms = [permutation(vocab, v, rows) for v, rows in input_vocabs]
        aligner = VocabAligner(layout, sources, perms, keys, base_key)
    return [PlacedSource(j, layout, sources, aligner) for j in range(slots)]


def finish_config(folder: Path, layout: Layout, configs: Sequence[Mapping[str, Any] | None],
                  vocab_size: int | None) -> None:
    """Rewrite the carried ``config.json`` for an assembled output: stacked layers, new vocabulary size."""
    path = folder / "config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    if layout.layers is not None and layout.stack is not None:
        cfg = stacked_config(cfg, layout.stack, [(configs[m] or {}, layer) for m, layer in layout.layers])
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
