"""Timeline configs: every shipped config loads, errors name their key paths (all at once), content keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_timeline_common import TASKS, task_entry, write_toy_tasks

from hf_time.errors import ConfigError
from hf_time.timeline.config import apply_overrides, load_timeline_config, timeline_config_from_dict
from hf_time.timeline.data import load_tasks
from hf_time.timeline.strategies import build_plan, time_weights

CONFIGS = sorted((Path(__file__).parent.parent / "recipes" / "configs").glob("*.yaml"))
MINIMAL = {"name": "t", "base": "org/base", "tasks": ["movie_sentiment", "sms_spam"], "held_out": ["tweet_sentiment"]}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_open_with_their_command(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# python recipes/time_text.py recipes/configs/{path.name}"
    config = load_timeline_config(path)
    if path.stem.startswith("smollm2"):  # the causal-LM recipe (issue 8): prompt tasks, LoRA experts
        assert len(config.tasks) >= 4 and len(config.held_out) >= 1
        assert all(t.name.endswith("_prompt") for t in config.tasks + config.held_out)
        assert config.base_ref == f"{config.namespace}/SmolLM2-135M-Instruct"
        assert set(config.training.lora.target_modules) == {"q_proj", "v_proj"}
        assert config.evaluation.max_length >= 128
    else:
        assert len(config.tasks) >= 5 and len(config.held_out) >= 2
        assert config.base_ref == f"{config.namespace}/all-MiniLM-L6-v2"


def test_the_five_recipe_strategies_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"best_in_time", "offline_merge", "sequential_ft", "ema_ties", "opcm", "smollm2_best_in_time"} <= names
    best = load_timeline_config(CONFIGS[[p.stem for p in CONFIGS].index("best_in_time")])
    assert (best.strategy.init, best.strategy.deploy, best.strategy.method, best.strategy.ema_weight) == ("ema", "ema", "linear", 0.5)


def test_round_trip_through_plain_data():
    config = timeline_config_from_dict({**MINIMAL, "strategy": {"method": "ties", "params": {"density": 0.3}},
                                        "training": {"steps": 7, "lora": {"r": 4}}})
    again = timeline_config_from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config
    assert again.training.lora.r == 4 and again.tasks[0].name == "movie_sentiment"


def test_every_problem_is_reported_at_once_with_its_key_path():
    bad = {
        "name": "t", "base": "org/base", "surprise": 1,
        "tasks": ["movie_sentiment", {"name": "x", "dataset": "d.csv", "text_colum": "s"}, "no_such_task",
                  {"name": "sms_spam", "text_column": "body"}],
        "held_out": ["movie_sentiment"],
        "strategy": {"init": "sometimes", "deploy": "ema", "method": "ties", "params": {"density": 3}, "ema_weight": 2},
        "training": {"steps": 0, "bogus": True, "lora": {"rank": 4}, "replay_fraction": 0.3},
        "replay": {"past_fraction": 1.5},
        "data": {"n_test": "many"},
    }
    with pytest.raises(ConfigError) as info:
        timeline_config_from_dict(bad)
    problems = info.value.problems
    expected_keys = ["surprise", "tasks[1].text_colum", "tasks[2].name", "tasks[3].text_column", "held_out[0].name",
                     "strategy.init", "strategy.params", "strategy.ema_weight", "training.steps", "training.bogus",
                     "training.lora.rank", "training.replay_fraction", "replay.past_fraction", "data.n_test"]
    for key in expected_keys:
        assert any(p.startswith((key + ":", key + " ", key + ".")) for p in problems), (key, problems)
    assert len(problems) >= len(expected_keys)
    assert isinstance(info.value, ValueError)  # ConfigError is a ValueError, as the conventions ask


def test_required_keys_and_unknown_methods_are_named():
    with pytest.raises(ConfigError) as info:
        timeline_config_from_dict({"tasks": [], "strategy": {"method": "nope"}})
    text = str(info.value)
    assert "name: required" in text and "base: required" in text and "tasks: must list" in text
    assert "strategy.method: unknown merge method 'nope'" in text


def test_lowrank_techniques_need_lora_experts_of_the_base():
    with pytest.raises(ConfigError) as info:
        timeline_config_from_dict({**MINIMAL, "strategy": {"method": "lora_cat", "init": "ema"}})
    text = str(info.value)
    assert "set training.lora" in text and "strategy.init: base" in text
    with pytest.raises(ConfigError, match="rmm writes a rmm snapshot"):
        timeline_config_from_dict({**MINIMAL, "strategy": {"method": "rmm", "init": "base"}, "training": {"lora": {"r": 4}}})
    config = timeline_config_from_dict({**MINIMAL, "strategy": {"method": "lora_cat", "init": "base", "deploy": "merge_all"},
                                        "training": {"lora": {"r": 4}}})
    assert config.strategy.method == "lora_cat"


def test_causal_lm_tasks_are_checked_with_their_key_paths():
    tasks = [{"name": "spam", "kind": "classification", "source": "sms_spam", "template": "SMS: {text}\nSpam:",
              "verbalizers": ["no", "yes"]},
             {"name": "qa", "kind": "sft", "dataset": "qa.jsonl", "short_answer": True}, "movie_sentiment_prompt"]
    config = timeline_config_from_dict({**MINIMAL, "tasks": tasks})
    assert [t.kind for t in config.tasks] == ["classification", "sft", "text"]
    assert timeline_config_from_dict(yaml.safe_load(config.to_yaml())) == config
    bad = [{"name": "a", "kind": "classification", "source": "sms_spam", "template": "no placeholder", "verbalizers": ["n", "y"]},
           {"name": "b", "kind": "classification", "source": "nope", "template": "{text}", "verbalizers": ["n", "y"]},
           {"name": "c", "template": "{text}"},
           {"name": "d", "kind": "sft"}]
    with pytest.raises(ConfigError) as info:
        timeline_config_from_dict({**MINIMAL, "tasks": bad})
    problems = info.value.problems
    assert any(p.startswith("tasks[0].template: 'no placeholder' has no {text}") for p in problems), problems
    assert any(p.startswith("tasks[1].source: unknown built-in task 'nope'") for p in problems)
    assert any(p.startswith("tasks[2].template: only for kind classification or sft") for p in problems)
    assert any(p.startswith("tasks[3]") and "dataset" in p for p in problems)


def test_overrides_use_dotted_paths():
    data = apply_overrides(MINIMAL, ["training.steps=40", "strategy.init=base", "held_out=[nyt_sentiment]"])
    config = timeline_config_from_dict(data)
    assert config.training.steps == 40 and config.strategy.init == "base"
    assert [t.name for t in config.held_out] == ["nyt_sentiment"]
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        apply_overrides(MINIMAL, ["training.steps"])


def test_dataset_task_problems_name_the_column_key(tmp_path):
    paths = write_toy_tasks(tmp_path)
    data = {"name": "t", "base": "org/base",
            "tasks": [task_entry("a", paths["a"]), {**task_entry("b", paths["b"]), "text_column": "sentence"},
                      {**task_entry("c", paths["c"]), "label_column": "y"}],
            "data": {"n_test": 6}}
    config = timeline_config_from_dict(data)  # columns are only known once the data is read
    with pytest.raises(ConfigError) as info:
        load_tasks(config)
    problems = info.value.problems
    assert any(p.startswith("tasks[1].text_column:") and "sentence" in p for p in problems), problems
    assert any(p.startswith("tasks[2].label_column:") for p in problems), problems
    assert not any(p.startswith("tasks[0]") for p in problems)


def test_task_keys_follow_the_data_not_the_path(tmp_path):
    paths = write_toy_tasks(tmp_path / "one")
    moved = write_toy_tasks(tmp_path / "two")
    make = lambda p: timeline_config_from_dict({"name": "t", "base": "b", "tasks": [task_entry("a", p)], "data": {"n_test": 6}})  # noqa: E731
    key_one = load_tasks(make(paths["a"]))[0][0].key
    assert load_tasks(make(moved["a"]))[0][0].key == key_one
    moved["a"].write_text(moved["a"].read_text().replace("apple", "pear"))
    assert load_tasks(make(moved["a"]))[0][0].key != key_one
    assert TASKS["a"][2] == load_tasks(make(paths["a"]))[0][0].task.label_descriptions


def _plan(**strategy):
    config = timeline_config_from_dict({**MINIMAL, "tasks": ["movie_sentiment", "sms_spam", "trec_qtype"],
                                        "strategy": strategy})
    return build_plan(config, "base-key", {t.name: f"key-{t.name}" for t in config.tasks}, "eval-key")


def test_plan_keys_share_experts_where_the_inputs_match():
    ema, offline, opcm = _plan(init="ema", deploy="ema"), _plan(init="base", deploy="merge_all"), _plan(
        init="base", deploy="merge_all", method="opcm")
    # Step 1 always trains from θ_0: one expert for every strategy.
    assert ema.steps[0].expert.key == offline.steps[0].expert.key == opcm.steps[0].expert.key
    # Base-init strategies share every expert, whatever they deploy or merge with.
    assert [s.expert.key for s in offline.steps] == [s.expert.key for s in opcm.steps]
    assert ema.steps[1].expert.key != offline.steps[1].expert.key
    # Init and deploy nodes follow the strategy table.
    assert [s.init.label for s in ema.steps] == ["base", "chain-1", "chain-2"]
    assert [s.deploy.label for s in offline.steps] == ["merge_all-1", "merge_all-2", "merge_all-3"]
    assert [s.deploy.label for s in opcm.steps] == ["chain-1", "chain-2", "chain-3"]  # a fold merges all
    assert [s.init.label for s in _plan(init="latest", deploy="latest").steps] == ["base", "expert-1", "expert-2"]
    # Keys are reproducible and change with what shapes the node.
    assert _plan(init="ema", deploy="ema") == ema
    assert _plan(init="ema", deploy="ema", ema_weight=0.3).steps[0].deploy.key != ema.steps[0].deploy.key


def test_time_weights_have_mean_one():
    assert time_weights("uniform", 3) == [1.0, 1.0, 1.0]
    assert time_weights("linear", 3) == pytest.approx([0.5, 1.0, 1.5])
    assert time_weights("reversed", 2) == pytest.approx([4 / 3, 2 / 3])


def test_a_task_from_a_hub_dataset_is_pinned_to_its_commit(hub, tmp_path):
    from huggingface_hub import HfApi

    from hf_time.hub import Hub

    paths = write_toy_tasks(tmp_path / "data")
    api = HfApi(endpoint=hub.url)
    api.create_repo("tests/toy-dataset", repo_type="dataset", exist_ok=True)
    api.upload_file(path_or_fileobj=str(paths["b"]), path_in_repo="data.csv", repo_id="tests/toy-dataset",
                    repo_type="dataset")
    sha = api.dataset_info("tests/toy-dataset").sha
    config = timeline_config_from_dict({"name": "t", "base": "b", "data": {"n_test": 6}, "tasks": [
        {"name": "b", "dataset": "tests/toy-dataset", "label_descriptions": list(TASKS["b"][2])}]})
    (task,), _, _ = load_tasks(config, Hub(endpoint=hub.url))
    assert task.source == {"dataset": "tests/toy-dataset", "revision": None, "sha": sha}
    assert len(task.task.test) == 6 and task.task.label_descriptions == TASKS["b"][2]
    missing = timeline_config_from_dict({"name": "t", "base": "b", "tasks": [{"name": "x", "dataset": "tests/nope"}]})
    with pytest.raises(ConfigError, match=r"tasks\[0\]: dataset 'tests/nope' not found"):
        load_tasks(missing, Hub(endpoint=hub.url))
