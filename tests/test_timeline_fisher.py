"""`fisher:` in a timeline: each expert's Fisher is computed right after training and published with it."""

from __future__ import annotations

import pytest
from test_timeline_common import save_tiny_bert, timeline_dict

from hf_time.errors import ConfigError
from hf_time.hub import Hub
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


def test_fisher_after_training_then_fisher_merge_of_the_experts(hub, tmp_path):
    from hf_time.api import merge
    from hf_time.fisher import FISHER_FILE, read_local_provenance

    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp_path / "base"), "tests/fisher-tl-base", commit_message="tiny base")
    data = timeline_dict(tmp_path, "tests/fisher-tl-base", "fisher-tl", init="base", deploy="merge_all")
    data["tasks"] = data["tasks"][:2]
    data["fisher"] = {"n_examples": 3}
    config = timeline_config_from_dict(data)
    assert config.to_dict()["fisher"] == {"n_examples": 3, "empirical": False, "word_embeddings": False}
    run_timeline(config, hub=h, work_dir=tmp_path / "work", progress=False)
    refs = [f"{config.repo_id}-experts@step-{i}" for i in (1, 2)]
    for ref in refs:
        res = h.resolve(ref)
        assert FISHER_FILE in h.list_files(res)
        prov = read_local_provenance(h.download(res, [FISHER_FILE]) / FISHER_FILE)
        assert prov["n_examples"] == 3 and prov["estimator"] == "sampled"
    out = merge("tests/fisher-tl-base", refs, "fisher", out=tmp_path / "m", hub=h, progress=False)
    assert out.lineage.method.name == "fisher"


def test_fisher_needs_full_experts_and_is_absent_from_old_configs(tmp_path):
    data = timeline_dict(tmp_path, "tests/x", "fisher-cfg", init="base", deploy="merge_all")
    assert "fisher" not in timeline_config_from_dict(data).to_dict()  # earlier configs keep their keys
    data["fisher"] = {"n_examples": 4}
    data["training"]["lora"] = {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}
    with pytest.raises(ConfigError, match="fisher: a Fisher is computed for full-weight experts"):
        timeline_config_from_dict(data)


LM_EVAL_YAML = """task: hf_time_tl_reviews
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}} is"
doc_to_target: label
doc_to_choice: ["good", "bad"]
metric_list:
  - metric: acc
"""


def test_timeline_evaluation_backend_lm_eval(hub, tmp_path):
    """evaluation: {backend: lm_eval, tasks: [...]} scores every deployed causal LM with the harness too."""
    import json

    pytest.importorskip("lm_eval")
    from test_timeline_llm import lm_timeline
    from tiny_lm import save_tiny_causal_lm, tiny_tokenizer

    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_causal_lm(tmp_path / "base", tiny_tokenizer()), "tests/tl-lm-eval-base", commit_message="tiny llama")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": f"the film {i}", "label": i % 2}) for i in range(4)) + "\n")
    include = tmp_path / "lm_eval_tasks"
    include.mkdir()
    (include / "reviews.yaml").write_text(LM_EVAL_YAML.format(data=docs))
    data = lm_timeline(tmp_path, "tests/tl-lm-eval-base", "tl-lm-eval",
                       evaluation={"backend": "lm_eval", "tasks": ["hf_time_tl_reviews"], "include": str(include)})
    data["tasks"] = data["tasks"][:1]
    config = timeline_config_from_dict(data)
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", progress=False)
    score = run.state.steps[-1].accuracy["lm_eval/hf_time_tl_reviews/acc"]
    assert score in (0.0, 0.25, 0.5, 0.75, 1.0) and "lm_eval/hf_time_tl_reviews/acc" in run.state.base_accuracy
    card = (h.download(h.resolve(f"{config.repo_id}@step-1"), ["README.md"]) / "README.md").read_text()
    assert "name: hf_time_tl_reviews" in card and "lm-eval acc" in card
    data["evaluation"]["tasks"] = ["hf_time_tl_reviewz"]
    with pytest.raises(KeyError, match="lm-eval task 'hf_time_tl_reviewz' not found"):
        run_timeline(timeline_config_from_dict({**data, "name": "tl-lm-eval-2"}), hub=h, work_dir=tmp_path / "w2",
                     progress=False)


def _level_evaluator(model_dir, tasks, *, batch_size, max_length, device=None):
    """'Accuracy' 1 − |mean LayerNorm weight − 2.6| / 10: experts a, b, c (levels 2, 3, 5) and their averages."""
    from pathlib import Path

    from safetensors.torch import load_file

    level = float(load_file(Path(model_dir) / "model.safetensors")["embeddings.LayerNorm.weight"].mean())
    return {t.name: round(1 - abs(level - 2.6) / 10, 6) for t in tasks}


def test_greedy_soup_as_a_deploy_technique(hub, tmp_path):
    """deploy: greedy_soup — after step 3 the soup keeps experts a and b (2.5 scores .99) and drops c (3.33: .927)."""
    import json

    from safetensors.torch import load_file
    from test_timeline_common import fake_trainer

    h = Hub(endpoint=hub.url)
    h.publish(save_tiny_bert(tmp_path / "base"), "tests/soup-tl-base", commit_message="tiny base")
    data = timeline_dict(tmp_path, "tests/soup-tl-base", "soup-tl", init="base", deploy="greedy_soup", soup_n_val=4)
    config = timeline_config_from_dict(data)
    assert config.to_dict()["strategy"]["soup_n_val"] == 4
    run = run_timeline(config, hub=h, work_dir=tmp_path / "work", trainer=fake_trainer, evaluator=_level_evaluator,
                       progress=False)
    assert [s.deployed.kind for s in run.state.steps] == ["soup", "soup", "soup"]
    snap = h.download(h.resolve(f"{config.repo_id}@step-3"), ["*.json", "*.safetensors", "README.md"])
    lineage = json.loads((snap / "hf_time.json").read_text())
    decisions = lineage["details"]["greedy_soup"]["decisions"]
    assert [(d["ingredient"], d["kept"]) for d in decisions] == [("expert-2", True), ("expert-1", True), ("expert-3", False)]
    assert [d["with_it"] for d in decisions] == pytest.approx([0.96, 0.99, 1 - abs(10 / 3 - 2.6) / 10], abs=1e-5)
    assert float(load_file(snap / "model.safetensors")["embeddings.LayerNorm.weight"].mean()) == pytest.approx(2.5)
    card = (snap / "README.md").read_text()
    assert "the greedy soup of experts 1..3" in card
    assert "expert-2 kept (0.9600); expert-1 kept (0.9900); expert-3 dropped (0.9267)" in card


def test_greedy_soup_deploy_key_is_absent_elsewhere(tmp_path):
    data = timeline_dict(tmp_path, "tests/x", "soup-cfg", init="base", deploy="merge_all")
    assert "soup_n_val" not in timeline_config_from_dict(data).to_dict()["strategy"]
