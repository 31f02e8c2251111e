"""Causal-LM tasks: classification as generation, and instruction tuning (SFT).

Two frozen task types, each a train and a test split plus what turns a row into a prompt and the
completion the model should produce; both validate themselves on construction, so a bad template or
a missing verbalizer fails before any model is loaded:

* :class:`PromptClassificationTask`: rows ``text``, ``label``; prompt = the template with
  ``{text}`` replaced, completion = ``separator + verbalizers[label]``. Scored by the label whose
  completion has the highest length-normalised log-likelihood.
* :class:`InstructionTask`: rows ``prompt``, ``completion`` (completion appended to the prompt as
  is, then EOS, as TRL does) or ``messages`` (a chat, rendered with the tokenizer's chat template;
  the last message, the assistant's, is the completion). Scored by the mean completion
  log-likelihood and, for short-answer tasks, exact match of the greedy answer.

Every row becomes an :class:`LMExample`; tokenizing, truncating and loss masking are
:mod:`hf_time.lm_encoding`'s job. Both task types hold ``datasets.Dataset`` splits, so tasks of
either kind mix in one timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import datasets

from hf_time.errors import ConfigError

PLACEHOLDER = "{text}"
KINDS = ("classification", "completion", "chat")


@dataclass(frozen=True)
class PromptFormat:
    """How a text classification row becomes a prompt and a completion.

    Attributes:
        template: the prompt; every ``{text}`` is replaced by the row's text (other braces are kept
            literally, so templates may contain JSON).
        verbalizers: the completion of each label, in label-id order (``"positive"``).
        separator: put between the prompt and the verbalizer; a space, since BPE tokenizers start a
            word with its leading space.
    """

    template: str
    verbalizers: tuple[str, ...]
    separator: str = " "

    def __post_init__(self) -> None:
        problems = []
        if PLACEHOLDER not in self.template:
            problems.append(f"the template {self.template!r} has no {PLACEHOLDER} placeholder; "
                            f"put {PLACEHOLDER} where the example's text goes")
        if len(self.verbalizers) < 2:
            problems.append(f"a classification prompt needs a verbalizer for each of >= 2 labels, got {list(self.verbalizers)}")
        if any(not isinstance(v, str) or not v.strip() for v in self.verbalizers):
            problems.append(f"verbalizers must be non-empty strings, got {list(self.verbalizers)}")
        elif len(set(self.verbalizers)) != len(self.verbalizers):
            problems.append(f"verbalizers must be distinct, got {list(self.verbalizers)}")
        if problems:
            raise ConfigError.from_problems("invalid prompt", problems)

    def prompt(self, text: str) -> str:
        return self.template.replace(PLACEHOLDER, text)

    def completion(self, label: int) -> str:
        return self.separator + self.verbalizers[label]


@dataclass(frozen=True)
class LMExample:
    """One causal-LM example before tokenization.

    Attributes:
        prompt: the text the model conditions on (for ``chat``: unused, empty).
        completion: the text the model is trained to produce and scored on.
        kind: ``classification`` (completion = a verbalizer, no EOS), ``completion`` (EOS appended
            after the completion) or ``chat`` (``messages`` rendered by the chat template, which
            closes the assistant turn itself).
        messages: for ``chat``, the conversation as ``(role, content)`` pairs; the last is the
            assistant's answer.
        task: the task the example comes from (informational, kept in replay pools).
    """

    prompt: str
    completion: str
    kind: str = "completion"
    messages: tuple[tuple[str, str], ...] = ()
    task: str = ""


def _split_problems(name: str, splits: Mapping[str, datasets.Dataset], required: Sequence[set[str]]) -> list[str]:
    """Problems with the columns of the splits: each must hold one of the ``required`` column sets."""
    problems = []
    for split_name, split in splits.items():
        cols = set(split.column_names)
        if not any(req <= cols for req in required):
            wanted = " or ".join(str(sorted(r)) for r in required)
            problems.append(f"{split_name} split of task {name!r} has columns {sorted(cols)}; it needs {wanted}")
    return problems


@dataclass(frozen=True, eq=False)
class PromptClassificationTask:
    """Classification as generation: a prompt per text, one verbalizer per label.

    Attributes:
        name: task name.
        train: training split, columns ``text`` (str) and ``label`` (int in ``[0, k)``).
        test: test split, same columns.
        label_names: label names, index = label id.
        prompt: the template and the verbalizers (one per label, in label-id order).
    """

    name: str
    train: datasets.Dataset
    test: datasets.Dataset
    label_names: tuple[str, ...]
    prompt: PromptFormat

    kind: ClassVar[str] = "classification"

    def __post_init__(self) -> None:
        problems = _split_problems(self.name, {"train": self.train, "test": self.test}, [{"text", "label"}])
        k = len(self.label_names)
        if len(self.prompt.verbalizers) != k:
            have = dict(zip(self.label_names, self.prompt.verbalizers))
            missing = [n for n in self.label_names if n not in have]
            problems.append(f"{k} labels {list(self.label_names)} but {len(self.prompt.verbalizers)} verbalizers"
                            + (f"; no verbalizer for {missing}" if missing else ""))
        for split_name, split in (("train", self.train), ("test", self.test)):
            if not problems and len(split) and not all(0 <= y < k for y in split["label"]):
                problems.append(f"{split_name} split has labels outside [0, {k})")
        if problems:
            raise ConfigError.from_problems(f"invalid task {self.name!r}", problems)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def label_descriptions(self) -> tuple[str, ...]:
        """The verbalizers: what the model is scored on (so tasks of any kind are keyed alike)."""
        return self.prompt.verbalizers

    def examples(self, split: str = "train") -> list[LMExample]:
        """The rows of a split as examples (completion = the true label's verbalizer)."""
        data = getattr(self, split)
        return [LMExample(self.prompt.prompt(t), self.prompt.completion(y), "classification", task=self.name)
                for t, y in zip(data["text"], data["label"])]

    def candidates(self, split: str = "test") -> tuple[list[str], list[str], list[int]]:
        """``(prompts, completions of every label, true labels)`` of a split, for scoring."""
        data = getattr(self, split)
        return ([self.prompt.prompt(t) for t in data["text"]],
                [self.prompt.completion(i) for i in range(self.num_labels)], list(data["label"]))


@dataclass(frozen=True, eq=False)
class InstructionTask:
    """Instruction tuning: ``prompt`` + ``completion`` columns, or a chat ``messages`` column.

    Attributes:
        name: task name.
        train: training split.
        test: test split, same format.
        short_answer: also score exact match of greedy answers (for answers of a few words).
        max_new_tokens: generation cap for exact match.
    """

    name: str
    train: datasets.Dataset
    test: datasets.Dataset
    short_answer: bool = False
    max_new_tokens: int = 32

    kind: ClassVar[str] = "sft"

    def __post_init__(self) -> None:
        problems = _split_problems(self.name, {"train": self.train, "test": self.test},
                                   [{"prompt", "completion"}, {"messages"}])
        if not problems and self._chat(self.train) != self._chat(self.test):
            problems.append("train and test splits must both be prompt/completion or both be messages")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not problems:
            for split_name, split in (("train", self.train), ("test", self.test)):
                problems += _row_problems(split_name, split, self._chat(split))
        if problems:
            raise ConfigError.from_problems(f"invalid task {self.name!r}", problems)

    @staticmethod
    def _chat(split: datasets.Dataset) -> bool:
        return not {"prompt", "completion"} <= set(split.column_names)

    @property
    def is_chat(self) -> bool:
        """Whether the rows are chats (rendered with the tokenizer's chat template)."""
        return self._chat(self.train)

    def examples(self, split: str = "train") -> list[LMExample]:
        data = getattr(self, split)
        if not self._chat(data):
            return [LMExample(p, c, "completion", task=self.name) for p, c in zip(data["prompt"], data["completion"])]
        out = []
        for chat in data["messages"]:
            pairs = tuple((m["role"], m["content"]) for m in chat)
            out.append(LMExample("", pairs[-1][1], "chat", pairs, task=self.name))
        return out


def _row_problems(split_name: str, split: datasets.Dataset, chat: bool) -> list[str]:
    """Rows that cannot be trained on: empty completions, chats not ending with the assistant."""
    if not chat:
        empty = sum(1 for c in split["completion"] if not isinstance(c, str) or not c)
        return [f"{split_name} split has {empty} rows with an empty completion"] if empty else []
    bad = 0
    for chat_rows in split["messages"]:
        ok = (isinstance(chat_rows, list) and chat_rows and all(isinstance(m, Mapping) and {"role", "content"} <= set(m)
              for m in chat_rows) and chat_rows[-1]["role"] == "assistant")
        bad += not ok
    return [f"{split_name} split has {bad} chats that are not lists of {{role, content}} ending with an assistant "
            "message"] if bad else []


LMTask = PromptClassificationTask | InstructionTask


def is_lm_task(task: object) -> bool:
    """Whether ``task`` is a causal-LM task (trained and scored as text generation)."""
    return isinstance(task, (PromptClassificationTask, InstructionTask))
