"""Cutting labelled text data into tasks: cleaning, balanced seeded splits, labels, local files.

Pure helpers shared by :mod:`hf_time.tasks` (text classification tasks) and :mod:`hf_time.lm_tasks`
(their causal-LM versions), kept apart so that neither task module imports the other.

Every task is cut the same way: texts are whitespace-normalised, exact duplicates dropped and texts
carrying conflicting labels dropped altogether (:func:`clean_examples`); the test split is balanced
(``n_test // k`` items per class, the remainder to the first classes) and depends only on the key and
the seed, never on ``n_train``; train is the rest, shuffled, so a smaller ``n_train`` is a prefix of
a larger one (:func:`split_indices`).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Mapping, Sequence

import datasets

from hf_time.errors import ConfigError

logger = logging.getLogger(__name__)

FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
Examples = tuple[tuple[str, ...], tuple[int, ...]]


def clean_examples(texts: Sequence[str], labels: Sequence[int]) -> Examples:
    """Normalise whitespace, drop empty texts, duplicates (keep first) and texts with conflicting labels."""
    first: dict[str, int] = {}
    conflicted: set[str] = set()
    for text, label in zip(texts, labels):
        text = " ".join(str(text).split())
        if not text:
            continue
        if text in first and first[text] != label:
            conflicted.add(text)
        first.setdefault(text, int(label))
    kept = [(t, y) for t, y in first.items() if t not in conflicted]
    if conflicted:
        logger.info("dropped %d texts that carry conflicting labels", len(conflicted))
    return tuple(t for t, _ in kept), tuple(y for _, y in kept)


def split_indices(labels: Sequence[int], label_names: Sequence[str], *, n_train: int | None, n_test: int, seed: int,
                  key: str) -> tuple[list[int], list[int]]:
    """Indices of (train, test): balanced test, rest shuffled for train; depends on (key, seed) only."""
    k = len(label_names)
    if n_test < k:
        raise ConfigError(f"task {key!r}: n_test={n_test} is smaller than its {k} classes")
    if n_train is not None and n_train < 0:
        raise ConfigError(f"task {key!r}: n_train must be >= 0, got {n_train}")
    # A string seed is hashed with SHA-512 by random.Random, so the split is stable across processes.
    rng = random.Random(f"{key}:{seed}")
    by_class: list[list[int]] = [[] for _ in range(k)]
    for i, y in enumerate(labels):
        by_class[y].append(i)
    quota = [n_test // k + (c < n_test % k) for c in range(k)]
    short = [f"label {label_names[c]!r} has {len(by_class[c])} examples, the test needs {quota[c]}" for c in range(k)
             if len(by_class[c]) < quota[c]]
    if short:
        raise ConfigError.from_problems(f"task {key!r}: too few examples for a balanced test of {n_test} "
                                        "(lower the test size: --n-test or data.n_test)", short)
    test, train = [], []
    for c, idx in enumerate(by_class):
        rng.shuffle(idx)
        test += idx[: quota[c]]
        train += idx[quota[c]:]
    rng.shuffle(test)
    rng.shuffle(train)
    if n_train is not None and n_train > len(train):
        logger.warning("task %s has %d training examples, fewer than n_train=%d", key, len(train), n_train)
    return train[:n_train], test


def subset(texts: Sequence[str], labels: Sequence[int], idx: Sequence[int]) -> datasets.Dataset:
    """The rows ``idx`` as a ``text``/``label`` dataset."""
    return datasets.Dataset.from_dict({"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]},
                                      features=FEATURES)


def label_ids(name: str, pools: Mapping[str, datasets.Dataset], column: str,
              label_names: Sequence[str] | None) -> tuple[tuple[str, ...], dict[str, list[int]]]:
    """Label names and each split's label ids, from ClassLabel, string or int labels."""
    feature = next(iter(pools.values())).features[column]
    values = {split: list(d[column]) for split, d in pools.items()}
    every = [v for vs in values.values() for v in vs]
    strings = not isinstance(feature, datasets.ClassLabel) and all(isinstance(v, str) for v in every)
    if label_names is None:
        if isinstance(feature, datasets.ClassLabel):
            label_names = feature.names
        else:
            label_names = sorted(set(every)) if strings else [str(i) for i in range(max(map(int, every)) + 1)]
    names = tuple(str(n) for n in label_names)
    index = {n: i for i, n in enumerate(names)}
    ids = {split: [index.get(v, -1) if strings else int(v) for v in vs] for split, vs in values.items()}
    bad = sorted({str(v) for s in values for v, i in zip(values[s], ids[s]) if not 0 <= i < len(names)})
    if bad:
        raise ConfigError(f"task {name!r}: labels {bad[:10]} are not among the label names {list(names)}")
    return names, ids


def label_descriptions_for(name: str, names: tuple[str, ...], given: Sequence[str] | Mapping[str, str] | None) -> tuple[str, ...]:
    """One text per label, in label order, from a list or a label name -> text mapping (None: the names).

    Raises:
        ConfigError: a label has no text, or the list has the wrong length.
    """
    if given is None:
        return names
    if isinstance(given, Mapping):
        missing = [n for n in names if n not in given]
        if missing:
            raise ConfigError(f"task {name!r}: no label description for {missing}")
        return tuple(given[n] for n in names)
    if len(given) != len(names):
        raise ConfigError(f"task {name!r}: {len(given)} label descriptions for {len(names)} labels {list(names)}")
    return tuple(given)


def load_local(src: datasets.Dataset | datasets.DatasetDict | str | Path) -> datasets.Dataset | datasets.DatasetDict:
    """A dataset object as is, or a local folder/file read with ``datasets`` (never downloaded).

    Raises:
        ConfigError: the path does not exist or its format is not supported.
    """
    if isinstance(src, (datasets.Dataset, datasets.DatasetDict)):
        return src
    path = Path(src)
    if not path.exists():
        raise ConfigError(f"dataset {str(src)!r} is neither a Dataset nor an existing local path (nothing is downloaded)")
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path))
    builders = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
                ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
    if path.suffix not in builders:
        raise ConfigError(f"unsupported dataset file {path.name}; use one of {sorted(builders)} or a folder")
    builder, kwargs = builders[path.suffix]
    return datasets.load_dataset(builder, data_files=str(path), **kwargs)
