"""Causal-LM task types, specs from plain data, loaders, built-in prompt versions and replay pools."""

import json

import datasets
import pytest

from hf_time.errors import ConfigError
from hf_time.lm_task_types import InstructionTask, LMExample, PromptClassificationTask, PromptFormat
from hf_time.lm_tasks import (
    InstructionSpec,
    PromptClassificationSpec,
    load_lm_task,
    lm_replay_pool,
    lm_task_spec_from_dict,
    prompt_task,
    replay_examples,
)
from hf_time.tasks import TextTask, list_tasks, load_task
from hf_time.training import replay_pool


def _labelled(n=12):
    return datasets.Dataset.from_dict({"sms": [f"message number {i}" for i in range(n)],
                                       "kind": ["ham", "spam"] * (n // 2)})


def test_template_without_text_placeholder_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"has no \{text\} placeholder") as err:
        PromptFormat("Review:\nAnswer:", ("negative", "positive"))
    assert "\n" not in str(err.value).replace("Review:\\nAnswer:", "")
    with pytest.raises(ConfigError, match=r"\{text\}"):
        lm_task_spec_from_dict({"name": "x", "source": "sms_spam", "template": "Answer:", "verbalizers": ["a", "b"]})


def test_missing_verbalizer_names_the_label():
    spec = lm_task_spec_from_dict({"kind": "classification", "name": "sms", "dataset": "unused", "text_column": "sms",
                                   "label_column": "kind", "template": "SMS: {text}\nSpam?", "verbalizers": {"ham": "no"}})
    with pytest.raises(ConfigError, match="no verbalizer for label 'spam'"):
        load_lm_task(spec, data=_labelled(), n_test=4)
    with pytest.raises(ConfigError, match="3 verbalizers for 2 labels"):
        prompt_task(load_task("sms_spam", n_test=4, n_train=4), "SMS: {text}", ["a", "b", "c"])
    one = lambda text, label: datasets.Dataset.from_dict({"text": [text], "label": [label]})  # noqa: E731
    with pytest.raises(ConfigError, match=r"3 labels \['ham', 'spam', 'eggs'\] but 2 verbalizers; no verbalizer for \['eggs'\]"):
        PromptClassificationTask("t", one("a", 0), one("b", 2), ("ham", "spam", "eggs"), PromptFormat("{text}", ("no", "yes")))


def test_spec_from_plain_data_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        lm_task_spec_from_dict({"kind": "sft", "name": "qa", "prompt_col": "q", "shortanswer": True})
    assert err.value.problems == ["unknown key 'prompt_col' for a sft task", "unknown key 'shortanswer' for a sft task",
                                  "missing key 'dataset'"]
    with pytest.raises(ConfigError, match="unknown task kind 'regression'"):
        lm_task_spec_from_dict({"kind": "regression", "name": "x"})
    spec = lm_task_spec_from_dict({"kind": "sft", "name": "qa", "dataset": "x.jsonl", "short_answer": True})
    assert spec == InstructionSpec("qa", "x.jsonl", short_answer=True)
    spec = lm_task_spec_from_dict({"name": "s", "source": "sms_spam", "template": "{text}", "verbalizers": ["no", "yes"]})
    assert spec == PromptClassificationSpec("s", "{text}", ("no", "yes"), source="sms_spam")


def test_classification_spec_over_local_data_with_verbalizer_mapping():
    spec = lm_task_spec_from_dict({"name": "sms", "dataset": "unused", "text_column": "sms", "label_column": "kind",
                                   "template": "SMS: {text}\nSpam?", "verbalizers": {"spam": "yes", "ham": "no"}})
    task = load_lm_task(spec, data=_labelled(), n_test=4, seed=1)
    assert isinstance(task, PromptClassificationTask) and task.label_names == ("ham", "spam")
    assert len(task.test) == 4 and len(task.train) == 8
    ex = task.examples("test")[0]
    text, label = task.test[0]["text"], task.test[0]["label"]
    assert ex == LMExample(f"SMS: {text}\nSpam?", [" no", " yes"][label], "classification", task="sms")


def test_builtin_prompt_versions_are_registered_and_cut_like_their_source():
    prompts = [n for n in list_tasks() if n.endswith("_prompt")]
    assert {"movie_sentiment_prompt", "sms_spam_prompt", "trec_qtype_prompt", "bbc_topic_prompt"} <= set(prompts)
    text, task = load_task("trec_qtype", n_test=12, n_train=30), load_task("trec_qtype_prompt", n_test=12, n_train=30)
    assert isinstance(text, TextTask) and isinstance(task, PromptClassificationTask)
    assert task.test["text"] == text.test["text"] and task.train["text"] == text.train["text"]
    prompts_, completions, labels = task.candidates()
    assert completions == [" abbreviation", " description", " thing", " person", " place", " number"]
    assert all(p.startswith("Question: ") and p.endswith("\nThe question asks for a") for p in prompts_)
    assert labels == text.test["label"]


def test_custom_prompt_over_builtin_data():
    spec = PromptClassificationSpec("spam_yn", "Is this spam? {text}\nAnswer:", {"ham": "no", "spam": "yes"}, source="sms_spam")
    task = load_lm_task(spec, n_test=10, n_train=5)
    assert task.name == "spam_yn" and task.test["text"] == load_task("sms_spam", n_test=10).test["text"]
    assert task.examples("test")[0].prompt.startswith("Is this spam? ")


def test_instruction_task_from_a_local_jsonl_file_with_renamed_columns(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}", "other": i}) + "\n" for i in range(10)))
    spec = InstructionSpec("qa", str(path), prompt_column="question", completion_column="answer", short_answer=True)
    task = load_lm_task(spec, n_test=3, n_train=4, seed=0)
    assert isinstance(task, InstructionTask) and task.short_answer and not task.is_chat
    assert task.train.column_names == ["prompt", "completion"] and len(task.test) == 3 and len(task.train) == 4
    assert not set(task.train["prompt"]) & set(task.test["prompt"])
    again = load_lm_task(spec, n_test=3, seed=0)
    assert again.test["prompt"] == task.test["prompt"] and again.train["prompt"][:4] == task.train["prompt"]


def test_instruction_task_keeps_given_splits_and_reads_chats():
    chat = lambda i: [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}]  # noqa: E731
    data = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"messages": [chat(i) for i in range(6)]}),
                                 "test": datasets.Dataset.from_dict({"messages": [chat(i) for i in range(6, 9)]})})
    task = load_lm_task(InstructionSpec("chat", "unused"), data=data, n_test=2)
    assert task.is_chat and len(task.train) == 6 and len(task.test) == 2
    ex = task.examples("train")[0]
    assert ex.kind == "chat" and ex.messages[-1][0] == "assistant" and ex.completion == ex.messages[-1][1]


def test_instruction_rows_that_cannot_be_trained_on_are_reported():
    bad = datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}]]})
    with pytest.raises(ConfigError, match="ending with an assistant message"):
        InstructionTask("chat", bad, bad)
    with pytest.raises(ConfigError, match="needs \\['completion', 'prompt'\\] or \\['messages'\\]"):
        InstructionTask("qa", datasets.Dataset.from_dict({"q": ["x"]}), datasets.Dataset.from_dict({"q": ["x"]}))


def test_replay_pool_of_mixed_kinds_round_trips_to_examples():
    cls = load_task("sms_spam_prompt", n_test=4, n_train=6)
    chat = datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": f"yo {i}"}] for i in range(5)]})
    sft = InstructionTask("chat", chat, chat)
    pool = replay_pool([cls, sft], n_per_task=3, seed=0)  # the encoder entry point hands LM tasks over
    assert len(pool) == 6 and pool["task"] == ["sms_spam_prompt"] * 3 + ["chat"] * 3
    examples = replay_examples(pool)
    assert set(examples[:3]) <= set(cls.examples("train")) and set(examples[3:]) <= set(sft.examples("train"))
    assert lm_replay_pool([cls], n_per_task=3, seed=0)["prompt"] == pool["prompt"][:3]


def test_replay_pool_cannot_mix_text_and_lm_tasks():
    with pytest.raises(ConfigError, match="cannot mix"):
        replay_pool([load_task("sms_spam", n_test=4, n_train=4), load_task("sms_spam_prompt", n_test=4, n_train=4)])
