"""Causal-LM timelines on the embedded Hub (issue 8): a tiny random Llama really trained over two steps,
full and LoRA experts, classification-as-generation and SFT tasks; a LoRA timeline deployed through
lora_cat equals the dense ΔW merge; every base/task/training mismatch refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HUB_TOKEN
from safetensors.torch import load_file
from test_timeline_common import save_tiny_bert, write_toy_tasks
from tiny_lm import save_tiny_causal_lm, tiny_tokenizer

from hf_time.errors import ConfigError
from hf_time.hub import Hub
from hf_time.lineage import Lineage
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline

REVIEWS = [("the film was great and fun", "positive"), ("the film was bad and dull", "negative")]


def write_lm_data(folder: Path) -> dict[str, Path]:
    """A review classification CSV and an SFT JSONL (prompt/completion) and a chat JSONL."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "reviews.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(16):
            text, label = REVIEWS[i % 2]
            w.writerow([f"{text} {i}", label])
    with open(folder / "qa.jsonl", "w") as f:
        for i in range(16):
            q, a = (("what is two plus two?", "four"), ("what colour is the sky?", "blue"))[i % 2]
            f.write(json.dumps({"prompt": f"Question: {q} {i}\nAnswer:", "completion": f" {a}"}) + "\n")
    with open(folder / "chat.jsonl", "w") as f:
        for i in range(16):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"hello {i}"},
                                             {"role": "assistant", "content": "hello world"}]}) + "\n")
    return {"reviews": folder / "reviews.csv", "qa": folder / "qa.jsonl", "chat": folder / "chat.jsonl"}


def lm_timeline(tmp: Path, base: str, name: str, **over) -> dict:
    data = write_lm_data(tmp / "data")
    config = {
        "name": name, "namespace": "tests", "base": base,
        "tasks": [{"name": "reviews", "kind": "classification", "dataset": str(data["reviews"]),
                   "template": "Review: {text}. Answer:", "verbalizers": {"negative": "negative", "positive": "positive"}},
                  {"name": "qa", "kind": "sft", "dataset": str(data["qa"]), "short_answer": True}],
        "held_out": [{"name": "chat", "kind": "sft", "dataset": str(data["chat"])}],
        "data": {"n_test": 4},
        "strategy": {"init": "ema", "deploy": "ema", "method": "linear"},
        "training": {"steps": 3, "batch_size": 4, "max_length": 48, "learning_rate": 1e-3, "freeze_embeddings": False},
        "evaluation": {"batch_size": 8, "max_length": 48},
    }
    for key, value in over.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def lm_base(hub, tmp_path_factory):
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    path = save_tiny_causal_lm(tmp_path_factory.mktemp("lm") / "base", tiny_tokenizer())
    h.publish(path, "tests/tiny-llama", commit_message="tiny llama")
    return h, path


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_two_step_causal_lm_timeline_trains_publishes_and_scores(lm_base, tmp_path, lora):
    h, _ = lm_base
    over = {"training": {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}} if lora else {}
    config = timeline_config_from_dict(lm_timeline(tmp_path, "tests/tiny-llama", f"llm-{'lora' if lora else 'full'}", **over))
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", progress=False)
    assert run.state.done == 2 and set(run.state.steps[-1].accuracy) == {"reviews", "qa", "chat"}
    assert all(0.0 <= v <= 1.0 for s in run.state.steps for v in s.accuracy.values())
    facts = run.state.steps[0].training
    assert facts["steps"] == 3 and facts["target_tokens"] > 0 and facts["final_loss"] > 0
    experts = h.api.list_repo_files(f"{config.repo_id}-experts", revision="step-1")
    assert ("adapter_model.safetensors" in experts) == lora and ("model.safetensors" in experts) != lora
    snapshot = h.download(h.resolve(f"{config.repo_id}@step-2"), ["*.json", "*.safetensors", "*.md"])
    lineage = Lineage.load(snapshot)
    assert lineage.kind == "merge" and lineage.method.name == "linear" and lineage.timeline["step"] == 2
    # The card's model-index says what each task was scored with: label likelihood, greedy exact match,
    # completion likelihood (not the encoders' head-free accuracy).
    from huggingface_hub import ModelCard

    scored = {(r.dataset_name, r.task_type, r.metric_type) for r in ModelCard.load(Path(snapshot) / "README.md").data.eval_results}
    assert {("reviews", "text-generation", "accuracy"), ("qa", "text-generation", "exact_match"),
            ("chat", "text-generation", "token_likelihood")} <= scored
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(snapshot)  # the deployed model keeps its LM head
    assert model.lm_head.weight.shape[0] == model.config.vocab_size


def test_a_lora_timeline_deployed_through_lora_cat_equals_the_dense_delta_merge(lm_base, tmp_path):
    """Offline merging of LoRA experts of θ_0: lora_cat (an adapter, ΔW = Σ w_i ΔW_i) == task arithmetic
    (λ = 1, θ_0 + Σ w_i τ_i) over the densified experts."""
    h, base = lm_base
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    common = {"strategy": {"init": "base", "deploy": "merge_all"}, "training": {"lora": lora}}
    cat = timeline_config_from_dict(lm_timeline(tmp_path / "a", "tests/tiny-llama", "llm-cat",
                                                **{**common, "strategy": {**common["strategy"], "method": "lora_cat"}}))
    dense = timeline_config_from_dict(lm_timeline(tmp_path / "b", "tests/tiny-llama", "llm-dense",
                                                  **{**common, "strategy": {**common["strategy"], "method": "task_arithmetic"}}))
    cache = tmp_path / "cache"  # shared: both timelines use the very same experts
    run_timeline(cat, hub=h, work_dir=tmp_path / "wa", cache_dir=cache, evaluator=fake_lm_evaluator, progress=False)
    run_timeline(dense, hub=h, work_dir=tmp_path / "wb", cache_dir=cache, evaluator=fake_lm_evaluator, progress=False)
    adapter = h.download(h.resolve(f"{cat.repo_id}@step-2"), ["*.json", "*.safetensors", "*.md"])
    assert (Path(adapter) / "adapter_config.json").is_file()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload()
    expected = load_file(Path(h.download(h.resolve(f"{dense.repo_id}@step-2"), ["*.safetensors"])) / "model.safetensors")
    got = merged.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name].float(), tensor.float(), rtol=1e-5, atol=1e-6, msg=name)
    card = (Path(adapter) / "README.md").read_text()
    assert "library_name: peft" in card and "base_model_relation: adapter" in card
    assert "lora_cat" in card and "the expert of step 1 (weight 1.0) and the expert of step 2 (weight 1.0)" in card


def fake_lm_evaluator(model_dir, tasks, **kwargs) -> dict[str, float]:
    """A deterministic stand-in for scoring (this test compares weights, not accuracies)."""
    return {t.name: 0.5 for t in tasks}


@pytest.fixture
def no_training(monkeypatch):
    from hf_time.timeline import experts

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the checks")

    monkeypatch.setattr(experts, "default_trainer", refuse)


def test_generation_tasks_on_an_encoder_base_are_refused_before_training(hub, tmp_path, no_training):
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    h.publish(save_tiny_bert(tmp_path / "bert"), "tests/llm-enc-base", commit_message="bert")
    config = timeline_config_from_dict(lm_timeline(tmp_path, "tests/llm-enc-base", "llm-on-encoder"))
    with pytest.raises(ConfigError, match=r"tasks \['reviews', 'qa', 'chat'\] are generation tasks but the base is BertModel"):
        run_timeline(config, hub=h, work_dir=tmp_path / "w", evaluator=fake_lm_evaluator, progress=False)


def test_text_tasks_on_a_causal_base_and_absent_lora_targets_are_refused_together(lm_base, tmp_path, no_training):
    h, _ = lm_base
    paths = write_toy_tasks(tmp_path / "toy")
    config = timeline_config_from_dict({
        "name": "llm-text", "namespace": "tests", "base": "tests/tiny-llama",
        "tasks": [{"name": "a", "dataset": str(paths["a"]), "label_descriptions": ["x", "y"]}],
        "data": {"n_test": 6}, "training": {"lora": {"r": 2, "target_modules": ["query", "value"]}}})
    with pytest.raises(ConfigError) as err:
        run_timeline(config, hub=h, work_dir=tmp_path / "w", evaluator=fake_lm_evaluator, progress=False)
    problems = err.value.problems
    assert any("are text tasks, trained head-free on encoders, but the base is LlamaForCausalLM" in p for p in problems)
    assert any(p.startswith("training.lora.target_modules: ['query', 'value'] are not modules of the base") and "q_proj" in p
               for p in problems)


def test_chat_tasks_need_a_chat_template_before_training(hub, tmp_path, no_training):
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    h.publish(save_tiny_causal_lm(tmp_path / "plain", tiny_tokenizer(chat_template=False)), "tests/llm-no-template",
              commit_message="no chat template")
    config = timeline_config_from_dict(lm_timeline(tmp_path, "tests/llm-no-template", "llm-no-template"))
    with pytest.raises(ConfigError, match=r"tasks \['chat'\] hold chat messages but the base's tokenizer has no chat template"):
        run_timeline(config, hub=h, work_dir=tmp_path / "w", evaluator=fake_lm_evaluator, progress=False)
