"""Reading PEFT adapters: PEFT's scaling rules, key mapping, refused variants, LoRA experts in dense merges.

Expected ΔW always comes from PEFT itself (``LoraLayer.get_delta_weight`` / ``merge_and_unload``),
an implementation independent of hf_time's.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from hf_time.api import merge
from hf_time.errors import IncompatibleExpertsError, MissingAdapterConfigError, UnsupportedAdapterError
from hf_time.io import Checkpoint
from hf_time.lowrank.adapters import LoraAdapter, map_to_base
from tiny import save_tiny_llama

IDS = torch.tensor([[1, 5, 7, 9, 3, 2]])


def save_tiny_lora(path, base, seed, *, r=4, alpha=8, targets=("q_proj", "v_proj"), scale=0.2, model=None, **lora_kwargs) -> Path:
    """A PEFT LoRA adapter of ``base`` with random A and B (so ΔW != 0), saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = model or AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **lora_kwargs))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    peft_model.save_pretrained(str(path))
    return Path(path)


def peft_model(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()


def peft_deltas(base, adapter) -> dict[str, torch.Tensor]:
    """PEFT's own ΔW per module path (as stored in the base: transposed for fan_in_fan_out/embeddings)."""
    from peft.tuners.lora import LoraLayer

    model = peft_model(base, adapter)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.scaling:
            out[name.removeprefix("base_model.model.")] = module.get_delta_weight("default").detach()
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("lora_base") / "base", 0)


def test_scaling_rules_match_peft(base, tmp_path):
    # rsLoRA + rank_pattern + alpha_pattern: r and alpha differ per module, scaling = alpha / sqrt(r)
    ad = save_tiny_lora(tmp_path / "rs", base, 1, r=4, alpha=8, use_rslora=True, rank_pattern={"layers.1.self_attn.q_proj": 2},
                        alpha_pattern={"v_proj": 3})
    adapter = LoraAdapter(ad)
    assert adapter.modules["model.layers.1.self_attn.q_proj"].rank == 2
    assert adapter.modules["model.layers.1.self_attn.q_proj"].scaling == pytest.approx(8 / 2 ** 0.5)
    assert adapter.modules["model.layers.0.self_attn.v_proj"].scaling == pytest.approx(3 / 2)
    expected = peft_deltas(base, ad)
    assert set(expected) == set(adapter.modules)
    for path, delta in expected.items():
        torch.testing.assert_close(adapter.factors(path).delta(), delta, rtol=1e-6, atol=1e-7)
    # plain LoRA with patterns: alpha / r
    ad2 = save_tiny_lora(tmp_path / "plain", base, 2, r=4, alpha=16, rank_pattern={"q_proj": 3}, alpha_pattern={"layers.0.self_attn.v_proj": 2})
    adapter2 = LoraAdapter(ad2)
    assert adapter2.modules["model.layers.0.self_attn.q_proj"].scaling == pytest.approx(16 / 3)
    assert adapter2.modules["model.layers.0.self_attn.v_proj"].scaling == pytest.approx(2 / 4)
    for path, delta in peft_deltas(base, ad2).items():
        torch.testing.assert_close(adapter2.factors(path).delta(), delta, rtol=1e-6, atol=1e-7)


def test_lora_and_full_experts_mixed_in_dense_merge(base, tmp_path):
    # task vector of a LoRA expert = ΔW: task arithmetic of [adapter, full expert] = θ0 + λ(ΔW + τ)
    ad = save_tiny_lora(tmp_path / "ad", base, 3, use_rslora=True, targets=("q_proj", "v_proj", "down_proj"))
    full = save_tiny_llama(tmp_path / "full", 4, base=base)
    res = merge(str(base), [str(ad), str(full)], "task_arithmetic", params={"lambda": 0.5}, out=tmp_path / "m", progress=False)
    b, f, m = Checkpoint(base), Checkpoint(full), Checkpoint(res.out_dir)
    merged_with_peft = peft_model(base, ad).merge_and_unload().state_dict()
    for name in b.names():
        lora_tau = merged_with_peft[name] - b.get(name)
        torch.testing.assert_close(m.get(name), b.get(name) + 0.5 * (lora_tau + f.get(name) - b.get(name)), rtol=0, atol=2e-6)
    # a dense method other than task arithmetic takes adapters too
    res = merge(str(base), [str(ad), str(full)], "ties", params={"density": 0.5}, out=tmp_path / "t", progress=False)
    assert Checkpoint(res.out_dir).names() == b.names()


def test_bf16_base_with_a_lora_expert(tmp_path):
    # the LoRA source returns float32 base + ΔW while the base is read as bf16: τ is still ΔW
    base = save_tiny_llama(tmp_path / "bf16", 0, dtype=torch.bfloat16)
    ad = save_tiny_lora(tmp_path / "ad", base, 12)
    res = merge(str(base), [str(ad)], "task_arithmetic", params={"lambda": 0.5}, out=tmp_path / "m", progress=False)
    b, m, deltas = Checkpoint(base), Checkpoint(res.out_dir), peft_deltas(base, ad)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert m.get(name).dtype == torch.bfloat16
    expected = (b.get(name).float() + 0.5 * deltas["model.layers.0.self_attn.q_proj"].float()).bfloat16()
    torch.testing.assert_close(m.get(name), expected, rtol=0, atol=0)


def test_adapter_trained_on_bare_model_maps_by_suffix(base, tmp_path):
    from transformers import AutoModel

    # module paths "layers.0.self_attn.q_proj" (LlamaModel) vs tensors "model.layers.0..." (ForCausalLM)
    ad = save_tiny_lora(tmp_path / "bare", base, 5, model=AutoModel.from_pretrained(base))
    adapter = LoraAdapter(ad)
    assert "layers.0.self_attn.q_proj" in adapter.modules
    targets = map_to_base(adapter, "base", Checkpoint(base).infos)
    assert targets["layers.0.self_attn.q_proj"] == "model.layers.0.self_attn.q_proj.weight"
    res = merge(str(base), [str(ad)], "task_arithmetic", out=tmp_path / "m", progress=False)
    expected = peft_model(base, save_tiny_lora(tmp_path / "full", base, 5)).merge_and_unload().state_dict()
    got = Checkpoint(res.out_dir)
    torch.testing.assert_close(got.get("model.layers.1.self_attn.v_proj.weight"), expected["model.layers.1.self_attn.v_proj.weight"])


def test_fan_in_fan_out_conv1d(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=32)).save_pretrained(tmp_path / "gpt2")
    gpt2 = tmp_path / "gpt2"
    ad = save_tiny_lora(tmp_path / "ad", gpt2, 6, targets=("c_attn", "c_fc"), fan_in_fan_out=True)
    adapter = LoraAdapter(ad)
    assert all(m.transposed for m in adapter.modules.values())
    res = merge(str(gpt2), [str(ad)], "task_arithmetic", out=tmp_path / "m", progress=False)
    expected = peft_model(gpt2, ad).merge_and_unload().state_dict()
    got = Checkpoint(res.out_dir)
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"):
        torch.testing.assert_close(got.get(name), expected[name], rtol=0, atol=1e-6)
    # and adapter-out methods keep the layout: PEFT loads the concatenation and computes the same logits
    ad2 = save_tiny_lora(tmp_path / "ad2", gpt2, 7, targets=("c_attn", "c_fc"), fan_in_fan_out=True)
    cat = merge(str(gpt2), [str(ad), str(ad2)], "lora_cat", out=tmp_path / "cat", progress=False)
    dense = merge(str(gpt2), [str(ad), str(ad2)], "task_arithmetic", out=tmp_path / "ta", progress=False)
    from transformers import AutoModelForCausalLM

    torch.testing.assert_close(peft_model(gpt2, cat.out_dir)(IDS).logits,
                               AutoModelForCausalLM.from_pretrained(dense.out_dir)(IDS).logits, rtol=1e-5, atol=1e-5)


def test_embedding_lora(base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    model.save_pretrained(str(tmp_path / "saved_base_layer"))  # PEFT also saves the whole embedding matrix
    with pytest.raises(UnsupportedAdapterError, match="save_embedding_layers=False"):
        LoraAdapter(tmp_path / "saved_base_layer")
    model.save_pretrained(str(tmp_path / "emb"), save_embedding_layers=False)
    res = merge(str(base), [str(tmp_path / "emb")], "task_arithmetic", out=tmp_path / "m", progress=False)
    expected = peft_model(base, tmp_path / "emb").merge_and_unload().state_dict()
    torch.testing.assert_close(Checkpoint(res.out_dir).get("model.embed_tokens.weight"), expected["model.embed_tokens.weight"])


@pytest.mark.parametrize("field,value,needle", [
    ("use_dora", True, "use_dora=True: DoRA"),
    ("lora_bias", True, "lora_bias=True"),
    ("bias", "all", "bias='all'"),
    ("modules_to_save", ["lm_head"], "modules_to_save"),
    ("init_lora_weights", "pissa", "path_initial_model_for_weight_conversion"),
    ("peft_type", "IA3", "only LoRA adapters"),
])
def test_unsupported_variants_are_refused_before_anything_is_written(base, tmp_path, field, value, needle):
    ad = save_tiny_lora(tmp_path / "ad", base, 8)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg[field] = value
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    for method in ("task_arithmetic", "lora_cat"):
        with pytest.raises(UnsupportedAdapterError, match=needle):
            merge(str(base), [str(ad)], method, out=tmp_path / method, progress=False)
        assert not (tmp_path / method).exists()


def test_adapter_without_config_is_refused(base, tmp_path):
    ad = save_tiny_lora(tmp_path / "ad", base, 9)
    (ad / "adapter_config.json").unlink()
    for method in ("task_arithmetic", "lora_cat", "rmm"):
        with pytest.raises(MissingAdapterConfigError, match="no adapter_config.json"):
            merge(str(base), [str(ad), str(ad)], method, out=tmp_path / method, progress=False)
        assert not (tmp_path / method).exists()


def test_adapter_of_another_base_is_refused(base, tmp_path):
    wide = save_tiny_llama(tmp_path / "wide", 0, hidden_size=48, num_attention_heads=4, num_key_value_heads=2)
    ad = save_tiny_lora(tmp_path / "ad", wide, 10)
    with pytest.raises(IncompatibleExpertsError, match="q_proj.*shape") as e:
        merge(str(base), [str(ad)], "task_arithmetic", out=tmp_path / "m", progress=False)
    assert e.value.tensor == "model.layers.0.self_attn.q_proj.weight"
    ok = save_tiny_lora(tmp_path / "ok", base, 11)
    other = tmp_path / "other_id"
    shutil.copytree(ok, other)
    for folder, hub_base in ((ok, "org/base-a"), (other, "org/base-b")):
        cfg = json.loads((folder / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = hub_base
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleExpertsError, match="different bases.*org/base-a.*org/base-b"):
        merge(str(base), [str(ok), str(other)], "lora_cat", out=tmp_path / "c", progress=False)
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()
