"""`hf-time moe` (issue 11): upcycled Mixtral / Qwen2-MoE models that transformers loads natively.

One expert routed top-1 must compute what the dense model computes; routers from prompts must
route; a 2-expert MoE of tiny models generates; the snapshot reruns from its merge_config.yaml.
"""

import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_time.api import moe
from hf_time.cli import main
from hf_time.errors import ConfigError
from hf_time.moe.config import moe_config_from_dict
from hf_time.moe.router import normalized

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import mergekit_parity  # noqa: E402  (tiny Llama/Qwen2 models with tokenizers)

IDS = torch.tensor([[1, 5, 7, 9, 11, 13]])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return mergekit_parity.build_models(tmp_path_factory.mktemp("moe_zoo"))


def _logits(folder, ids=IDS, **kw):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model, model(ids, **kw)


@pytest.mark.parametrize("arch, expected, recorded", [("llama", "MixtralForCausalLM", "mixtral"),
                                                     ("qwen2", "Qwen2MoeForCausalLM", "qwen2_moe")])
def test_one_expert_top1_equals_the_dense_model(zoo, tmp_path, arch, expected, recorded):
    res = moe({"base_model": str(zoo[f"{arch}-base"]), "experts_per_token": 1, "gate_mode": "hidden",
               "experts": [{"source_model": str(zoo[f"{arch}-base"]), "positive_prompts": ["w1 w2 w3"]}]},
              out=tmp_path / "moe", progress=False)
    model, out = _logits(res.out_dir)
    assert type(model).__name__ == expected
    _, dense = _logits(zoo[f"{arch}-base"])
    torch.testing.assert_close(out.logits, dense.logits, rtol=0, atol=1e-5)
    assert res.lineage.kind == "moe" and res.lineage.details["config"]["architecture"] == recorded


def test_prompt_routers_route_and_a_two_expert_moe_generates(zoo, tmp_path):
    a_dir, b_dir = zoo["llama-a"], zoo["llama-b"]
    res = moe({"base_model": str(zoo["llama-base"]), "gate_mode": "cheap_embed", "experts_per_token": 1,
               "experts": [{"source_model": str(a_dir), "positive_prompts": ["w1 w2 w3"]},
                           {"source_model": str(b_dir), "positive_prompts": ["w30 w31"], "negative_prompts": ["w1"]}]},
              out=tmp_path / "moe", progress=False)
    weights = load_file(str(res.out_dir / "model.safetensors"))
    embed = load_file(str(zoo["llama-base"] / "model.safetensors"))["model.embed_tokens.weight"]
    bos, w = 1, {f"w{i}": i + 3 for i in range(45)}  # the fixture vocabulary: 3 specials, then w0..w44
    pos_a = normalized(embed[[bos, w["w1"], w["w2"], w["w3"]]].sum(0))
    pos_b = normalized(normalized(embed[[bos, w["w30"], w["w31"]]].sum(0)) - normalized(embed[[bos, w["w1"]]].sum(0)))
    for layer in range(4):  # cheap_embed: the same router for every layer, one row per expert
        torch.testing.assert_close(weights[f"model.layers.{layer}.mlp.gate.weight"], torch.stack([pos_a, pos_b]),
                                   rtol=0, atol=1e-6)
    # expert e of layer i is the MLP of layer i of expert model e, fused as transformers stores it
    a = load_file(str(a_dir / "model.safetensors"))
    gate_up = weights["model.layers.2.mlp.experts.gate_up_proj"]
    assert torch.equal(gate_up[0], torch.cat([a["model.layers.2.mlp.gate_proj.weight"], a["model.layers.2.mlp.up_proj.weight"]]))
    model, out = _logits(res.out_dir, output_router_logits=True)
    routes = {tuple(r.argmax(-1).tolist()) for r in out.router_logits}
    assert len(out.router_logits) == 4 and any(len(set(r)) == 2 for r in routes), routes  # both experts get tokens
    generated = model.generate(IDS, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, IDS.shape[1] + 4)


def test_qwen2_moe_shared_expert_random_router_and_a_rerun_from_merge_config(zoo, tmp_path, capsys):
    config = {"base_model": str(zoo["qwen2-base"]), "gate_mode": "random", "seed": 3, "architecture": "qwen",
              "experts": [{"source_model": str(zoo["qwen2-a"])}, {"source_model": str(zoo["qwen2-b"]), "residual_scale": 0.5}],
              "shared_experts": [{"source_model": str(zoo["qwen2-base"])}]}
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["moe", str(path), "--out", str(tmp_path / "first"), "--quiet"]) == 0
    assert "built qwen2_moe MoE" in capsys.readouterr().out
    w = load_file(str(tmp_path / "first" / "model.safetensors"))
    b = load_file(str(zoo["qwen2-b"] / "model.safetensors"))
    torch.testing.assert_close(w["model.layers.1.mlp.experts.down_proj"][1], 0.5 * b["model.layers.1.mlp.down_proj.weight"])
    base = load_file(str(zoo["qwen2-base"] / "model.safetensors"))
    assert torch.equal(w["model.layers.0.mlp.shared_expert.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    g = torch.Generator().manual_seed(3)
    expected = torch.randn((4, 3, 32), generator=g)  # layers, 2 experts + the shared one, hidden
    assert torch.equal(w["model.layers.3.mlp.gate.weight"], expected[3, :2])
    assert torch.equal(w["model.layers.3.mlp.shared_expert_gate.weight"], expected[3, 2:])
    assert main(["moe", str(tmp_path / "first" / "merge_config.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    first, again = (yaml.safe_load((tmp_path / d / "hf_time.json").read_text()) for d in ("first", "again"))
    assert first["output"]["files"] == again["output"]["files"]
    _logits(tmp_path / "first")  # loads and runs


@pytest.mark.parametrize("data, message", [
    ({"experts_per_token": 3}, "experts_per_token: 3 is more than the 2 expert(s)"),
    ({"experts": [{"source_model": "org/a", "positive_prompts": ["x"]}, {"source_model": "org/b", "positive_prompts": ["x"]}]},
     "experts: every expert has the same prompts"),
    ({"experts": [{"source_model": "org/a"}, {"source_model": "org/b", "positive_prompts": ["y"]}]},
     "experts[0].positive_prompts: gate_mode hidden needs prompts"),
    ({"architecture": "deepseek"}, "architecture: 'deepseek' is not supported"),
    ({"experts": [{"source_model": "org/a", "positive_prompts": ["x"], "noise_scale": 0.1},
                  {"source_model": "org/b", "positive_prompts": ["y"]}]}, "experts[0].noise_scale: not supported"),
    ({"gate_mode": "clever"}, "gate_mode: must be one of hidden, hidden_last, hidden_avg, cheap_embed, random"),
])
def test_bad_moe_configs_are_named_before_any_network_call(data, message):
    base = {"base_model": "org/base", "experts": [{"source_model": "org/a", "positive_prompts": ["x"]},
                                                  {"source_model": "org/b", "positive_prompts": ["y"]}]}
    with pytest.raises(ConfigError) as err:
        moe_config_from_dict({**base, **data})
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_an_architecture_that_cannot_hold_the_base_is_one_line(zoo, tmp_path, capsys):
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump({"base_model": str(zoo["qwen2-base"]), "architecture": "mixtral", "gate_mode": "random",
                                    "experts_per_token": 1, "experts": [{"source_model": str(zoo["qwen2-a"])}]}))
    assert main(["moe", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: architecture mixtral takes llama or mistral models, but the base is 'qwen2'"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("mode", ["hidden", "hidden_avg"])
def test_hidden_routers_are_the_bases_hidden_states_of_the_prompts(zoo, tmp_path, mode):
    from transformers import AutoModelForCausalLM

    res = moe({"base_model": str(zoo["llama-base"]), "gate_mode": mode, "experts_per_token": 1,
               "experts": [{"source_model": str(zoo["llama-a"]), "positive_prompts": ["w1 w2", "w5"]},
                           {"source_model": str(zoo["llama-b"]), "positive_prompts": ["w40 w41 w42"]}]},
              out=tmp_path / "moe", progress=False)
    weights = load_file(str(res.out_dir / "model.safetensors"))
    dense = AutoModelForCausalLM.from_pretrained(zoo["llama-base"], dtype=torch.float32).eval()

    def state(ids):  # (layers, hidden): what enters each layer, at the last token or averaged over tokens
        with torch.no_grad():
            h = torch.stack(dense(torch.tensor([ids]), output_hidden_states=True).hidden_states[:-1])[:, 0]
        return h.mean(1) if mode == "hidden_avg" else h[:, -1]

    bos, w = 1, lambda i: i + 3
    expected_a = normalized((state([bos, w(1), w(2)]) + state([bos, w(5)])) / 2)
    expected_b = normalized(state([bos, w(40), w(41), w(42)]))
    for layer in range(4):
        torch.testing.assert_close(weights[f"model.layers.{layer}.mlp.gate.weight"],
                                   torch.stack([expected_a[layer], expected_b[layer]]), rtol=0, atol=1e-5)


def test_a_moe_of_hub_models_is_published_pinned_with_its_card(hub, api, zoo, tmp_path, repo_name):
    from huggingface_hub import ModelCard

    from conftest import HUB_TOKEN
    from hf_time.hub import Hub

    for k in ("base", "a", "b"):
        api.create_repo(f"{repo_name}-{k}", exist_ok=True)
        api.upload_folder(repo_id=f"{repo_name}-{k}", folder_path=str(zoo[f"llama-{k}"]))
    h = Hub(endpoint=hub.url, token=HUB_TOKEN)
    res = moe({"base_model": f"{repo_name}-base", "gate_mode": "cheap_embed",
               "experts": [{"source_model": f"{repo_name}-a", "positive_prompts": ["w1"]},
                           {"source_model": f"{repo_name}-b", "positive_prompts": ["w2"]}]},
              out=tmp_path / "moe", push_to=f"{repo_name}-moe", tag="v1", hub=h, progress=False)
    assert res.published.changed and res.published.tag == "v1"
    files = set(api.list_repo_files(f"{repo_name}-moe"))
    assert {"model.safetensors", "config.json", "hf_time.json", "merge_config.yaml", "README.md", "tokenizer.json"} <= files
    card = ModelCard.load(f"{repo_name}-moe", token=HUB_TOKEN)
    assert card.data.base_model == [f"{repo_name}-base", f"{repo_name}-a", f"{repo_name}-b"]
    assert card.data.base_model_relation == "merge" and "moe" in card.data.tags
    pinned = yaml.safe_load((res.out_dir / "merge_config.yaml").read_text())
    assert pinned["base_model"] == f"{repo_name}-base@{api.model_info(f'{repo_name}-base').sha}"
    assert "hf-time moe merge_config.yaml" in card.text
