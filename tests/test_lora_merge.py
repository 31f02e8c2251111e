"""Adapters out: lora_cat (exact in ΔW, removable) and lora_svd (ΔW merge + truncated SVD), loaded by PEFT."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_time.api import merge
from hf_time.cli import main
from hf_time.errors import ConfigError, IncompatibleExpertsError
from hf_time.io import Checkpoint
from hf_time.lineage import Lineage
from hf_time.merges import get
from test_lora_adapters import IDS, peft_deltas, peft_model, save_tiny_lora
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A tiny base and three adapters with different ranks and scaling rules."""
    d = tmp_path_factory.mktemp("lora_merge")
    base = save_tiny_llama(d / "base", 0)
    adapters = [
        save_tiny_lora(d / "a0", base, 1, r=4, alpha=8),
        save_tiny_lora(d / "a1", base, 2, r=2, alpha=4, use_rslora=True),
        save_tiny_lora(d / "a2", base, 3, r=4, alpha=16, rank_pattern={"layers.1.self_attn.q_proj": 3}, alpha_pattern={"v_proj": 2}),
    ]
    return base, adapters


def out_deltas(folder) -> dict[str, torch.Tensor]:
    """B @ A of every module of an output adapter, computed from its file (its scaling is 1)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is False and cfg["lora_alpha"] == cfg["r"] and cfg["alpha_pattern"] == cfg["rank_pattern"]
    tensors = load_file(folder / "adapter_model.safetensors")
    paths = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in tensors}
    return {p: tensors[f"base_model.model.{p}.lora_B.weight"] @ tensors[f"base_model.model.{p}.lora_A.weight"] for p in paths}


def test_lora_cat_is_exact_in_delta_w_and_removable(lora, tmp_path):
    base, adapters = lora
    weights = [1.0, -0.5, 2.0]
    res = merge(str(base), [str(a) for a in adapters], "lora_cat", weights=weights, out=tmp_path / "cat", progress=False)
    expected = [peft_deltas(base, a) for a in adapters]
    got = out_deltas(res.out_dir)
    assert set(got) == set(expected[0])
    for path, delta in got.items():
        torch.testing.assert_close(delta, sum(w * e[path] for w, e in zip(weights, expected)), rtol=1e-5, atol=1e-6)
    # ranks add up (4 + 2 + 3 in the module with a rank_pattern); each expert owns a slice: dropping it removes it exactly
    modules = res.lineage.output.details["modules"]
    assert modules["model.layers.1.self_attn.q_proj"]["rank"] == 9 and modules["model.layers.0.self_attn.q_proj"]["rank"] == 10
    tensors = load_file(res.out_dir / "adapter_model.safetensors")
    for path, info in modules.items():
        start, end = info["slices"][1]
        a, b = tensors[f"base_model.model.{path}.lora_A.weight"], tensors[f"base_model.model.{path}.lora_B.weight"]
        keep = [i for i in range(a.shape[0]) if not start <= i < end]
        torch.testing.assert_close(b[:, keep] @ a[keep], expected[0][path] + 2.0 * expected[2][path], rtol=1e-5, atol=1e-6)


def test_outputs_load_in_peft_with_the_dense_logits(lora, tmp_path):
    from transformers import AutoModelForCausalLM

    base, adapters = lora
    refs = [str(a) for a in adapters]
    dense = merge(str(base), refs, "task_arithmetic", params={"lambda": 0.7}, out=tmp_path / "ta", progress=False)
    dense_logits = AutoModelForCausalLM.from_pretrained(dense.out_dir)(IDS).logits
    cat = merge(str(base), refs, "lora_cat", weights=[0.7] * 3, out=tmp_path / "cat", progress=False)
    svd = merge(str(base), refs, "lora_svd", params={"rank": 10, "method_params": "lambda=0.7"}, out=tmp_path / "svd", progress=False)
    for out in (cat.out_dir, svd.out_dir):
        torch.testing.assert_close(peft_model(base, out)(IDS).logits, dense_logits, rtol=1e-5, atol=1e-5)
    assert all(m["energy_kept"] == pytest.approx(1.0) for m in svd.lineage.output.details["modules"].values())
    card = (svd.out_dir / "README.md").read_text()
    assert "library_name: peft" in card and "base_model_relation: adapter" in card and "Energy of the merged" in card


@pytest.mark.parametrize("method,params", [("ties", "density=0.5"), ("linear", ""), ("dare_ties", "density=0.5,seed=3")])
def test_lora_svd_at_full_rank_equals_the_dense_merge(lora, tmp_path, method, params):
    base, adapters = lora
    refs = [str(a) for a in adapters]
    inner = dict(p.split("=") for p in params.split(",") if p)
    dense = merge(str(base), refs, method, params=inner, out=tmp_path / "dense", progress=False)
    svd = merge(str(base), refs, "lora_svd", params={"rank": 32, "method": method, "method_params": params},
                out=tmp_path / "svd", progress=False)
    b, m = Checkpoint(base), Checkpoint(dense.out_dir)
    got = out_deltas(svd.out_dir)
    for path, delta in got.items():
        name = f"{path}.weight"
        torch.testing.assert_close(delta, m.get(name) - b.get(name), rtol=1e-4, atol=2e-5)
    # lower rank: the energy kept is reported per module, and is the SVD's
    low = merge(str(base), refs, "lora_svd", params={"rank": 2, "method": method, "method_params": params}, out=tmp_path / "low", progress=False)
    for path, info in low.lineage.output.details["modules"].items():
        s = torch.linalg.svdvals(got[path].double())
        assert info["rank"] == 2 and info["energy_kept"] == pytest.approx(float((s[:2] ** 2).sum() / (s ** 2).sum()), rel=1e-4)


def test_different_target_modules_union_or_strict(lora, tmp_path):
    base, adapters = lora
    mlp = save_tiny_lora(tmp_path / "mlp", base, 4, targets=("up_proj",))
    res = merge(str(base), [str(adapters[0]), str(mlp)], "lora_cat", out=tmp_path / "cat", progress=False)
    got, a0, a1 = out_deltas(res.out_dir), peft_deltas(base, adapters[0]), peft_deltas(base, mlp)
    assert set(got) == set(a0) | set(a1)
    torch.testing.assert_close(got["model.layers.0.mlp.up_proj"], a1["model.layers.0.mlp.up_proj"])
    cfg = json.loads((res.out_dir / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["q_proj", "up_proj", "v_proj"]
    for method in ("lora_cat", "lora_svd", "rmm"):
        with pytest.raises(IncompatibleExpertsError, match=r"strict: adapter (a0|mlp) does not adapt .* which (a0|mlp) adapts"):
            merge(str(base), [str(adapters[0]), str(mlp)], method, params={"strict": True}, out=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_partial_layers_use_explicit_module_paths(lora, tmp_path):
    base, _ = lora
    ad = save_tiny_lora(tmp_path / "l1", base, 5, layers_to_transform=[1])
    res = merge(str(base), [str(ad)], "lora_cat", out=tmp_path / "cat", progress=False)
    cfg = json.loads((res.out_dir / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    torch.testing.assert_close(peft_model(base, res.out_dir)(IDS).logits, peft_model(base, ad)(IDS).logits)


def test_bad_inputs(lora, tmp_path):
    base, adapters = lora
    full = save_tiny_llama(tmp_path / "full", 1, base=base)
    with pytest.raises(ConfigError, match="merges LoRA adapters.*full.*task_arithmetic"):
        merge(str(base), [str(adapters[0]), str(full)], "lora_cat", out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="method_params"):
        merge(str(base), [str(adapters[0])], "lora_svd", params={"method_params": "density"}, out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="threshold_scope=global"):
        merge(str(base), [str(adapters[0])], "lora_svd", params={"method": "ties", "method_params": "threshold_scope=global"},
              out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_and_registry(lora, tmp_path, capsys):
    base, adapters = lora
    assert {s.name for s in __import__("hf_time.merges", fromlist=["list_methods"]).list_methods("lowrank")} >= {"lora_cat", "lora_svd", "rmm"}
    assert get("lora_svd").make_config({"rank": "8"}).rank == 8
    assert main(["ls", "--kind", "lowrank"]) == 0
    assert "lora_cat" in capsys.readouterr().out
    out = tmp_path / "cat"
    code = main(["merge", "--base", str(base), "--expert", str(adapters[0]), "--expert", str(adapters[1]), "--method", "lora_cat",
                 "--out", str(out), "--quiet"])
    assert code == 0 and (out / "adapter_model.safetensors").is_file()
    assert main(["merge", str(out / "merge_config.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert Lineage.load(tmp_path / "again").output.files == Lineage.load(out).output.files
