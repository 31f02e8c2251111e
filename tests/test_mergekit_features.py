"""mergekit configs as people write them (issue 11), checked without mergekit: hand-computed tensors.

Gradients and filters on method parameters and weights, slices with layer ranges, passthrough layer
stacking (Llama and Qwen2, whose per-layer ``layer_types`` must follow), tokenizer_source, the
lineage (values per tensor derivable, merge_config.yaml reproducing the bytes), and bad input as
one line each. tests/test_mergekit_parity.py compares the same features with mergekit itself.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_time.api import merge, tensor_values
from hf_time.cli import main
from hf_time.config import load_merge_config, merge_config_from_dict
from hf_time.errors import ConfigError
from hf_time.lineage import Lineage
from hf_time.merges.slerp import slerp_tensors
from tiny import save_tiny_llama

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import mergekit_parity  # noqa: E402  (its tiny Llama/Qwen2 models with tokenizers)

L = "model.layers"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("mk_llama")
    base = save_tiny_llama(d / "base", 0, num_hidden_layers=4)
    return {"base": base, "a": save_tiny_llama(d / "a", 1, base=base, noise=0.05),
            "b": save_tiny_llama(d / "b", 2, base=base, noise=0.05)}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Tiny Llama and Qwen2 models with tokenizers (base, a, b, and v with another vocabulary)."""
    return mergekit_parity.build_models(tmp_path_factory.mktemp("mk_zoo"))


def _w(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def _run(tmp_path, data, name="m"):
    return merge(config=merge_config_from_dict(data), out=tmp_path / name, progress=False)


def test_weight_gradients_and_filters_follow_the_layers(llama, tmp_path):
    a, b = _w(llama["a"]), _w(llama["b"])
    res = _run(tmp_path, {"merge_method": "linear", "parameters": {"normalize": False},
                          "models": [{"model": str(llama["a"]), "parameters": {"weight": [1.0, 0.0]}},
                                     {"model": str(llama["b"]), "parameters": {
                                         "weight": [{"filter": "mlp", "value": 2.0}, {"value": 0.5}]}}]})
    out = _w(res.out_dir)
    for i in range(4):  # weight of a: 1 - i/3 (gradient over 4 layers); of b: 2 on mlp, else 0.5
        wa = 1 - i / 3
        for name, wb in ((f"{L}.{i}.mlp.up_proj.weight", 2.0), (f"{L}.{i}.self_attn.q_proj.weight", 0.5)):
            torch.testing.assert_close(out[name], wa * a[name] + wb * b[name], rtol=0, atol=1e-6)
    # outside the layers a gradient sits at t = 0: its first anchor
    torch.testing.assert_close(out["lm_head.weight"], a["lm_head.weight"] + 0.5 * b["lm_head.weight"], rtol=0, atol=1e-6)
    lineage = res.lineage
    assert [e.weight for e in lineage.experts] == [[1.0, 0.0], [{"filter": "mlp", "value": 2.0}, {"value": 0.5}]]
    values = tensor_values(res.out_dir, f"{L}.2.mlp.down_proj.weight")
    assert values.weights == pytest.approx((1 / 3, 2.0)) and values.t == pytest.approx(2 / 3)


def test_slerp_t_per_filter_is_base_expert_or_the_midpoint(llama, tmp_path):
    base, a = _w(llama["base"]), _w(llama["a"])
    t = [{"filter": "self_attn", "value": 0}, {"filter": "mlp", "value": [1, 1]}, {"value": 0.5}]
    res = merge(str(llama["base"]), [str(llama["a"])], "slerp", params={"t": t}, out=tmp_path / "m", progress=False)
    out = _w(res.out_dir)
    name = f"{L}.1.self_attn.k_proj.weight"
    assert torch.equal(out[name], base[name])
    name = f"{L}.3.mlp.gate_proj.weight"
    assert torch.equal(out[name], a[name])
    name = f"{L}.0.input_layernorm.weight"
    torch.testing.assert_close(out[name], slerp_tensors(0.5, base[name], a[name]), rtol=0, atol=0)
    assert res.lineage.method.parameters["t"] == [{"filter": "self_attn", "value": 0.0},
                                                 {"filter": "mlp", "value": [1.0, 1.0]}, {"value": 0.5}]


def test_passthrough_stacks_layer_ranges_and_renumbers_them(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = _w(llama["a"]), _w(llama["b"])
    res = _run(tmp_path, {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(llama["a"]), "layer_range": [0, 3]}]},
        {"sources": [{"model": str(llama["b"]), "layer_range": [1, 4],
                      "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]}]})
    out = _w(res.out_dir)
    assert json.loads((res.out_dir / "config.json").read_text())["num_hidden_layers"] == 6
    for i, (src, j) in enumerate([(a, 0), (a, 1), (a, 2), (b, 1), (b, 2), (b, 3)]):
        assert torch.equal(out[f"{L}.{i}.mlp.down_proj.weight"], src[f"{L}.{j}.mlp.down_proj.weight"])
    assert torch.equal(out[f"{L}.4.self_attn.o_proj.weight"], 0.5 * b[f"{L}.2.self_attn.o_proj.weight"])
    assert torch.equal(out["model.embed_tokens.weight"], a["model.embed_tokens.weight"])  # first slice's model
    assert torch.equal(out["lm_head.weight"], b["lm_head.weight"])  # last slice's model
    assert torch.equal(out["model.norm.weight"], b["model.norm.weight"])
    model = AutoModelForCausalLM.from_pretrained(res.out_dir)
    assert len(model.model.layers) == 6
    assert res.lineage.slices[1]["sources"][0]["layer_range"] == [1, 4]
    card = (res.out_dir / "README.md").read_text()
    assert "assembled from 2 slices of layer ranges (6 layers)" in card and "layer_range:" in card


def test_qwen2_passthrough_rebuilds_layer_types_so_transformers_loads_it(zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    res = _run(tmp_path, {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(zoo["qwen2-a"]), "layer_range": [0, 4]}]},
        {"sources": [{"model": str(zoo["qwen2-b"]), "layer_range": [2, 4]}]}]})
    cfg = json.loads((res.out_dir / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6 and len(cfg["layer_types"]) == 6
    model = AutoModelForCausalLM.from_pretrained(res.out_dir)
    b = _w(zoo["qwen2-b"])
    assert torch.equal(model.model.layers[5].self_attn.q_proj.bias.detach(), b[f"{L}.3.self_attn.q_proj.bias"])


def test_slices_merge_layer_ranges_with_a_gradient_per_slice(llama, tmp_path):
    base, a, b = _w(llama["base"]), _w(llama["a"]), _w(llama["b"])
    res = _run(tmp_path, {"merge_method": "task_arithmetic", "base_model": str(llama["base"]), "slices": [
        {"sources": [{"model": str(llama["base"]), "layer_range": [0, 3]}, {"model": str(llama["a"]), "layer_range": [1, 4]}],
         "parameters": {"weight": [0.0, 1.0]}},
        {"sources": [{"model": str(llama["base"]), "layer_range": [3, 4]}, {"model": str(llama["b"]), "layer_range": [0, 1]}]}],
        "parameters": {"weight": 0.5}})
    out = _w(res.out_dir)
    assert json.loads((res.out_dir / "config.json").read_text())["num_hidden_layers"] == 4
    for i, (src, j, w) in enumerate([(a, 1, 0.0), (a, 2, 0.5), (a, 3, 1.0), (b, 0, 0.5)]):
        k = [0, 1, 2, 3][i]  # base layers 0..3 in order
        name = f"{L}.{i}.mlp.up_proj.weight"
        expected = base[f"{L}.{k}.mlp.up_proj.weight"] + w * (src[f"{L}.{j}.mlp.up_proj.weight"] - base[f"{L}.{k}.mlp.up_proj.weight"])
        torch.testing.assert_close(out[name], expected, rtol=0, atol=1e-6)
    assert tensor_values(res.out_dir, f"{L}.3.mlp.up_proj.weight").weights == (0.5,)  # slice 2: the global weight


def test_tokenizer_source_union_aligns_embeddings_token_by_token(zoo, tmp_path):
    from transformers import AutoTokenizer

    base_dir, v_dir = zoo["llama-base"], zoo["llama-v"]
    res = _run(tmp_path, {"merge_method": "linear", "base_model": str(base_dir), "tokenizer_source": "union",
                          "models": [{"model": str(base_dir), "parameters": {"weight": 0.4}},
                                     {"model": str(v_dir), "parameters": {"weight": 0.6}}]})
    tok = AutoTokenizer.from_pretrained(res.out_dir)
    vb, vv = (AutoTokenizer.from_pretrained(p).get_vocab() for p in (base_dir, v_dir))
    vocab = tok.get_vocab()
    assert set(vocab) == set(vb) | set(vv) and json.loads((res.out_dir / "config.json").read_text())["vocab_size"] == 58
    out, b, v = _w(res.out_dir), _w(base_dir), _w(v_dir)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        row = lambda w, voc, t: w[name][voc[t]]  # noqa: E731
        torch.testing.assert_close(row(out, vocab, "w3"), 0.4 * row(b, vb, "w3") + 0.6 * row(v, vv, "w3"), rtol=0, atol=1e-6)
        torch.testing.assert_close(row(out, vocab, "x4"), row(v, vv, "x4"), rtol=0, atol=1e-6)  # only v knows it
        torch.testing.assert_close(row(out, vocab, "w44"), row(b, vb, "w44"), rtol=0, atol=1e-6)  # only the base
    assert sorted(vocab.values()) == list(range(58))
    assert [vocab[f"x{i}"] for i in range(9)] == list(range(48, 57))  # new tokens appended in v's id order
    assert res.lineage.tokenizer == {"tokenizer_source": "union"}
    assert tok.chat_template.startswith("{% for m in messages %}llama-base:")  # the base's, carried over
    assert "Vocabulary: `tokenizer_source: union`" in (res.out_dir / "README.md").read_text()


def test_tokenizer_source_model_takes_that_models_tokenizer_and_chat_template(zoo, tmp_path):
    from transformers import AutoTokenizer

    v_dir = zoo["qwen2-v"]
    res = _run(tmp_path, {"merge_method": "task_arithmetic", "base_model": str(zoo["qwen2-base"]),
                          "tokenizer_source": str(v_dir), "models": [{"model": str(zoo["qwen2-a"])}, {"model": str(v_dir)}]})
    tok, theirs = AutoTokenizer.from_pretrained(res.out_dir), AutoTokenizer.from_pretrained(v_dir)
    assert tok.get_vocab() == theirs.get_vocab() and tok.chat_template == theirs.chat_template
    out, base, a, v = _w(res.out_dir), _w(zoo["qwen2-base"]), _w(zoo["qwen2-a"]), _w(v_dir)
    vb, vv = AutoTokenizer.from_pretrained(zoo["qwen2-base"]).get_vocab(), theirs.get_vocab()
    emb = "model.embed_tokens.weight"
    # w3: everyone knows it: θ_0 + (a − θ_0) + (v − θ_0); x2: only v knows it, so every input's row is v's
    torch.testing.assert_close(out[emb][vv["w3"]], a[emb][vb["w3"]] + v[emb][vv["w3"]] - base[emb][vb["w3"]],
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(out[emb][vv["x2"]], v[emb][vv["x2"]], rtol=0, atol=1e-6)
    assert json.loads((res.out_dir / "config.json").read_text())["vocab_size"] == len(vv)


def test_chat_template_is_set_on_the_carried_tokenizer(zoo, tmp_path):
    from transformers import AutoTokenizer

    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    res = merge(str(zoo["llama-base"]), [str(zoo["llama-a"])], "slerp", chat_template=template, out=tmp_path / "m",
                progress=False)
    assert AutoTokenizer.from_pretrained(res.out_dir).chat_template == template
    assert "chat_template" in res.lineage.merge_config()


def test_the_lineage_reruns_to_the_same_bytes(llama, tmp_path):
    first = _run(tmp_path, {"merge_method": "ties", "base_model": str(llama["base"]),
                            "models": [{"model": str(llama["a"]), "parameters": {"density": [0.3, 0.9], "weight": 0.6}},
                                       {"model": str(llama["b"]), "parameters": {
                                           "density": [{"filter": "mlp", "value": 0.4}]}}],
                            "parameters": {"lambda": [{"filter": "self_attn", "value": [0.5, 1.5]}, {"value": 1.0}]}},
                 "first")
    again = merge(config=load_merge_config(first.out_dir / "merge_config.yaml"), out=tmp_path / "again", progress=False)
    assert again.lineage.output.files == first.lineage.output.files
    assert Lineage.load(first.out_dir).merge_config() == first.lineage.merge_config()
    v = tensor_values(first.out_dir, f"{L}.3.self_attn.v_proj.weight")
    assert v.parameters["lambda"] == pytest.approx(1.5) and v.expert_parameters[0]["density"] == pytest.approx(0.9)
    assert "density" not in v.expert_parameters[1]  # its filter matches mlp only: the method's default applies


def _cli_error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_each(llama, tmp_path, capsys):
    import yaml

    def write(data):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    a, b = str(llama["a"]), str(llama["b"])
    err = _cli_error(capsys, ["merge", write({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": a, "layer_range": [2, 6]}]}]}), "--out", str(tmp_path / "o1")])
    assert f"slices[0]: layer_range [2, 6] of {a} is outside the model, which has 4 layers" in err
    err = _cli_error(capsys, ["merge", write({"merge_method": "linear", "slices": [
        {"sources": [{"model": a, "layer_range": [0, 2]}, {"model": b, "layer_range": [1, 4]}]}]}), "--out", str(tmp_path / "o2")])
    assert f"slices[0]: its sources disagree in length: {a} [0, 2] (2), {b} [1, 4] (3)" in err
    err = _cli_error(capsys, ["merge", write({"merge_method": "slerp", "base_model": str(llama["base"]), "models": [
        {"model": a}], "parameters": {"t": [{"filter": "lm_head", "value": [0, 1]}, {"value": 0.5}]}}),
        "--out", str(tmp_path / "o3")])
    assert "parameter 't': a gradient [0.0, 1.0] for filter 'lm_head', which matches only tensors outside the layers" in err
    err = _cli_error(capsys, ["merge", write({"merge_method": "slerp", "base_model": str(llama["base"]), "models": [
        {"model": a}], "parameters": {"t": [{"regex": "mlp.*", "value": 1}]}}), "--out", str(tmp_path / "o4")])
    assert "parameters.t[0]: unknown filter syntax 'regex'" in err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


@pytest.mark.parametrize("data, message", [
    ({"merge_method": "dare_linear", "parameters": {"seed": [0, 5]}}, "parameters.seed: seed is an integer"),
    ({"merge_method": "ties", "parameters": {"threshold_scope": [{"filter": "mlp", "value": "global"}]}},
     "parameters.threshold_scope: threshold_scope is a whole-model setting"),
    ({"merge_method": "ties", "parameters": {"density": [0.5, 1.5]}}, "parameters.density: must be <= 1.0, got 1.5"),
    ({"merge_method": "ema", "parameters": {"w": [0.5, 1.0]}}, "parameters.w: gradients and filters"),
    ({"merge_method": "slerp", "parameters": {"t": [0.1, 0.9]}, "slices": [{"sources": [
        {"model": "org/a", "layer_range": [0, 2]}, {"model": "org/b", "layer_range": [0, 2]}]}], "base_model": "org/c"},
     "slices[0]: slerp reads the base θ_0, so the base model org/c must be one of the sources"),
    ({"merge_method": "linear", "tokenizer_source": "org/z"}, "tokenizer_source: 'org/z' is not one of the merge's models"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "org/a", "layer_range": [3, 1]}]}]},
     "slices[0].sources[0].layer_range: must satisfy 0 <= start < end"),
])
def test_request_problems_are_named_before_any_network_call(data, message):
    from hf_time.pipeline.plan import make_plan

    data = {"base_model": "org/base", **data}
    if "slices" not in data:
        data["models"] = [{"model": "org/x"}]
    with pytest.raises(ConfigError) as err:
        make_plan(merge_config_from_dict(data))
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "recipes" / "mergekit").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_mergekit_recipe_loads_and_names_its_command(path):
    from hf_time.moe.config import load_moe_config
    from hf_time.pipeline.plan import make_plan

    first = path.read_text().splitlines()[0]
    command = "moe" if path.name == "moe.yaml" else "merge"
    assert first.startswith(f"# hf-time {command} recipes/mergekit/{path.name} --out ")
    if command == "moe":
        assert load_moe_config(path).experts_per_token == 1
    else:
        plan = make_plan(load_merge_config(path))  # planning needs no network
        assert plan.tensor_params is not None
