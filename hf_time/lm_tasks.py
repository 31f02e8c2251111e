"""Causal-LM task specs (plain data, e.g. from YAML) and their loaders, plus LM replay pools.

A spec says where the data is and how rows become prompts; :func:`load_lm_task` reads it into a
:class:`~hf_time.lm_task_types.PromptClassificationTask` or
:class:`~hf_time.lm_task_types.InstructionTask`. Specs are frozen dataclasses built from plain data
by :func:`lm_task_spec_from_dict`, which rejects unknown keys and reports every problem at once::

    {kind: classification, name: reviews, dataset: ./reviews.csv, template: "Review: {text}\\nSentiment:",
     verbalizers: {neg: negative, pos: positive}}
    {kind: classification, name: sms, source: sms_spam, template: "...{text}...", verbalizers: [no, yes]}
    {kind: sft, name: qa, dataset: org/qa@main, prompt_column: question, completion_column: answer,
     short_answer: true}
    {kind: sft, name: chat, dataset: ./chats.jsonl}          # a "messages" column

The data is a built-in task's (``source``; registered prompt versions such as ``sms_spam_prompt``
need no spec: :func:`hf_time.tasks.load_task` loads them), a local folder or file, or a Hub dataset
``org/name@rev`` downloaded by the ``hub`` client given (:meth:`hf_time.hub.Hub.download_dataset`).
Classification data is cut like every text task (balanced test split, :mod:`hf_time.task_split`);
instruction data keeps its ``train``/``test`` splits when it has both, else a seeded ``n_test`` rows
are held out.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets

from hf_time.errors import ConfigError
from hf_time.lm_task_types import (
    PLACEHOLDER,
    InstructionTask,
    LMExample,
    LMTask,
    PromptClassificationTask,
    PromptFormat,
)
from hf_time.task_split import load_local
from hf_time.tasks import TextTask, load_task, task_from_dataset

REPLAY_FEATURES = datasets.Features({
    "task": datasets.Value("string"), "example_kind": datasets.Value("string"), "prompt": datasets.Value("string"),
    "completion": datasets.Value("string"),
    "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})})


@dataclass(frozen=True)
class PromptClassificationSpec:
    """A classification-as-generation task: labelled texts, a template and one verbalizer per label.

    Attributes:
        name: the task's name.
        template: the prompt, with ``{text}`` where the text goes.
        verbalizers: label name -> completion, or one completion per label in label-id order.
        dataset: a local folder/file or a Hub id ``org/name[@rev]``; None reads the built-in ``source``.
        source: a built-in text task (:func:`hf_time.tasks.list_tasks`) whose data is used.
        text_column, label_column: the columns of ``dataset``.
        label_names: label names in id order (default: inferred from the data).
        separator: put between prompt and verbalizer.
    """

    name: str
    template: str
    verbalizers: tuple[str, ...] | Mapping[str, str]
    dataset: str | None = None
    source: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_names: tuple[str, ...] | None = None
    separator: str = " "

    kind = "classification"

    def __post_init__(self) -> None:
        problems = []
        if PLACEHOLDER not in self.template:
            problems.append(f"template: {self.template!r} has no {PLACEHOLDER} placeholder; "
                            f"put {PLACEHOLDER} where the example's text goes")
        if (self.dataset is None) == (self.source is None):
            problems.append("give exactly one of dataset (a path or Hub id) and source (a built-in task)")
        if not self.verbalizers:
            problems.append("verbalizers: one per label is needed")
        if problems:
            raise ConfigError.from_problems(f"invalid task {self.name!r}", problems)


@dataclass(frozen=True)
class InstructionSpec:
    """An instruction-tuning task: prompt/completion columns, or a chat messages column.

    Attributes:
        name: the task's name.
        dataset: a local folder/file or a Hub id ``org/name[@rev]``.
        prompt_column, completion_column: the prompt/completion columns.
        messages_column: the chat column (lists of ``{role, content}``), used when the data has it.
        short_answer: also score exact match of greedy answers.
        max_new_tokens: generation cap for exact match.
    """

    name: str
    dataset: str
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    short_answer: bool = False
    max_new_tokens: int = 32

    kind = "sft"


LMTaskSpec = PromptClassificationSpec | InstructionSpec
_SPECS: dict[str, type] = {"classification": PromptClassificationSpec, "sft": InstructionSpec}


def lm_task_spec_from_dict(data: Mapping[str, Any]) -> LMTaskSpec:
    """Build a spec from plain data: ``kind`` (``classification`` or ``sft``) plus the spec's fields.

    Raises:
        ConfigError: unknown kind or keys, missing fields, or invalid values, all listed at once.
    """
    data = dict(data)
    kind = data.pop("kind", "classification")
    cls = _SPECS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown task kind {kind!r}; use one of {sorted(_SPECS)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = [f"unknown key {k!r} for a {kind} task" for k in sorted(set(data) - set(fields))]
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    problems += [f"missing key {k!r}" for k in required if k not in data]
    if problems:
        raise ConfigError.from_problems(f"invalid task {data.get('name', '?')!r}", problems)
    for key in ("label_names",):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    if isinstance(data.get("verbalizers"), list):
        data["verbalizers"] = tuple(data["verbalizers"])
    return cls(**{k: v for k, v in data.items() if k in fields})


def prompt_task(task: TextTask, template: str, verbalizers: Sequence[str] | Mapping[str, str], *,
                name: str | None = None, separator: str = " ") -> PromptClassificationTask:
    """The prompt version of a text task: same splits and labels, a template and verbalizers.

    Raises:
        ConfigError: a label has no verbalizer, or the template has no ``{text}``.
    """
    name = name or task.name
    if isinstance(verbalizers, Mapping):
        missing = [n for n in task.label_names if n not in verbalizers]
        extra = [k for k in verbalizers if k not in task.label_names]
        if missing or extra:
            raise ConfigError.from_problems(f"task {name!r}: verbalizers do not match the labels {list(task.label_names)}",
                                            [f"no verbalizer for label {m!r}" for m in missing]
                                            + [f"verbalizer for unknown label {e!r}" for e in extra])
        verbalizers = [verbalizers[n] for n in task.label_names]
    elif len(verbalizers) != task.num_labels:
        raise ConfigError(f"task {name!r}: {len(verbalizers)} verbalizers for {task.num_labels} labels "
                          f"{list(task.label_names)}; give one per label")
    fmt = PromptFormat(template, tuple(verbalizers), separator)
    return PromptClassificationTask(name, task.train, task.test, task.label_names, fmt)


def _resolve(dataset: str, data, hub) -> datasets.Dataset | datasets.DatasetDict | Path:
    if data is not None:
        return data
    local = Path(dataset).expanduser()
    if local.exists():
        return local
    if hub is None:
        raise ConfigError(f"dataset {dataset!r} is not a local path and no Hub client was given to download it")
    folder, _sha = hub.download_dataset(dataset)
    return folder


def load_lm_task(spec: LMTaskSpec, *, n_train: int | None = None, n_test: int = 200, seed: int = 0,
                 data: datasets.Dataset | datasets.DatasetDict | str | Path | None = None, hub=None) -> LMTask:
    """Read a spec's data into a task.

    Args:
        spec: the task spec.
        n_train: cap on training examples.
        n_test: test size (balanced over labels for classification).
        seed: seeds the split.
        data: the data already at hand (a ``Dataset``/``DatasetDict`` or local path), overriding
            ``spec.dataset``; e.g. a Hub snapshot the caller pinned and downloaded.
        hub: a client with ``download_dataset(ref) -> (folder, sha)``, for Hub ids.

    Raises:
        ConfigError: missing columns, labels without verbalizers, too few examples.
        TaskDataNotFoundError: a built-in source whose data package is not installed.
    """
    if isinstance(spec, PromptClassificationSpec):
        if spec.dataset is None and data is None:
            text = load_task(spec.source, n_train=n_train, n_test=n_test, seed=seed)
            if not isinstance(text, TextTask):
                raise ConfigError(f"task {spec.name!r}: source {spec.source!r} is already a prompt task; "
                                  "use its source text task")
        else:
            text = task_from_dataset(spec.name, _resolve(spec.dataset, data, hub), spec.text_column, spec.label_column,
                                     label_names=spec.label_names, n_train=n_train, n_test=n_test, seed=seed)
        return prompt_task(text, spec.template, spec.verbalizers, name=spec.name, separator=spec.separator)
    raw = load_local(_resolve(spec.dataset, data, hub))
    train, test = _instruction_splits(spec, raw, n_train=n_train, n_test=n_test, seed=seed)
    return InstructionTask(spec.name, train, test, short_answer=spec.short_answer, max_new_tokens=spec.max_new_tokens)


def _instruction_splits(spec: InstructionSpec, raw, *, n_train: int | None, n_test: int,
                        seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    splits = dict(raw) if isinstance(raw, datasets.DatasetDict) else {"all": raw}
    first = next(iter(splits.values()))
    if spec.messages_column in first.column_names:
        columns = {spec.messages_column: "messages"}
    elif {spec.prompt_column, spec.completion_column} <= set(first.column_names):
        columns = {spec.prompt_column: "prompt", spec.completion_column: "completion"}
    else:
        raise ConfigError(f"task {spec.name!r}: the data has columns {first.column_names}; it needs "
                          f"{spec.prompt_column!r} and {spec.completion_column!r}, or {spec.messages_column!r}")
    splits = {k: d.select_columns(list(columns)).rename_columns(columns) for k, d in splits.items()}
    rng = random.Random(f"{spec.name}:{seed}")
    if "train" in splits and "test" in splits:
        train, test = splits["train"], splits["test"]
        test_idx = sorted(rng.sample(range(len(test)), min(n_test, len(test))))
        train_idx = list(range(len(train)))
    else:
        pool = datasets.concatenate_datasets(list(splits.values()))
        order = list(range(len(pool)))
        rng.shuffle(order)
        if len(order) <= n_test:
            raise ConfigError(f"task {spec.name!r}: {len(order)} rows leave nothing to train on after a test "
                              f"split of {n_test}")
        train, test, test_idx, train_idx = pool, pool, order[:n_test], order[n_test:]
    rng.shuffle(train_idx)
    return train.select(train_idx[:n_train]), test.select(test_idx)


def lm_replay_pool(tasks: Sequence[LMTask], *, n_per_task: int | None = None, seed: int = 0) -> datasets.Dataset:
    """A replay pool of training examples of past causal-LM tasks (columns :data:`REPLAY_FEATURES`).

    Rows are stored as examples (prompt already templated, completion already verbalized), so pools
    of tasks of any kind concatenate and need no side table; chats stay messages and are rendered
    with the tokenizer when trained on.
    """
    rows = []
    for task in tasks:
        examples = task.examples("train")
        random.Random(f"replay:{task.name}:{seed}").shuffle(examples)
        rows += examples[:n_per_task]
    return datasets.Dataset.from_dict(
        {"task": [e.task for e in rows], "example_kind": [e.kind for e in rows], "prompt": [e.prompt for e in rows],
         "completion": [e.completion for e in rows],
         "messages": [[{"role": r, "content": c} for r, c in e.messages] for e in rows]}, features=REPLAY_FEATURES)


def replay_examples(pool: datasets.Dataset) -> list[LMExample]:
    """The examples of a replay pool built by :func:`lm_replay_pool`.

    Raises:
        ConfigError: the pool lacks its columns (e.g. an encoder replay pool).
    """
    missing = set(REPLAY_FEATURES) - set(pool.column_names)
    if missing:
        raise ConfigError(f"replay pool lacks column(s) {sorted(missing)}; build it with lm_replay_pool()")
    return [LMExample(p, c, k, tuple((m["role"], m["content"]) for m in msgs), t)
            for t, k, p, c, msgs in zip(pool["task"], pool["example_kind"], pool["prompt"], pool["completion"], pool["messages"])]
