"""Sequential folds (EMA, continual task arithmetic, continual averaging, OPCM) on tiny local models."""

import dataclasses
import json

import pytest
import torch
import yaml

from hf_time import engine
from hf_time.hashing import sha256_file
from hf_time.errors import ConfigError, IncompatibleExpertsError, OutputExistsError, UnknownMethodError
from hf_time.io import Checkpoint
from hf_time.merges import get, list_methods
from hf_time.api import MergeResult, fold
from hf_time.lineage import Lineage
from tiny import save_tiny_llama


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("seq_models")
    base = save_tiny_llama(d / "base", 0)
    experts = [save_tiny_llama(d / f"e{i}", i, base=base, max_shard_size="40KB" if i == 2 else None) for i in (1, 2, 3)]
    return base, experts


def _state(folder):
    ck = Checkpoint(folder)
    return {n: ck.get(n) for n in ck.names()}


def _chain(method, base, experts, out_root, params=None, **kwargs):
    """Fold the experts one by one; returns the FoldResults."""
    results, previous, state = [], None, None
    for t, expert in enumerate(experts, start=1):
        res = fold(previous, base, expert, method, out_root / f"{method}-{t}", params=params, state=state,
                   progress=False, **kwargs)
        results.append(res)
        previous, state = res.out_dir, json.loads(json.dumps(res.state))  # states travel as JSON
    return results


def test_sequential_methods_are_registered():
    assert {s.name for s in list_methods("sequential")} == {"ema", "continual_task_arithmetic", "continual_average", "opcm"}
    assert get("ema").parameters()[0].name == "w" and get("ema").parameters()[0].default == 0.5
    assert get("continual_task_arithmetic").parameters()[0].name == "lambda"
    assert get("continual_task_arithmetic").parameters()[0].default == 0.3
    assert get("opcm").parameters()[0].name == "alpha" and get("opcm").parameters()[0].default == 0.5
    for spec in list_methods("sequential"):
        assert spec.paper.startswith("https://arxiv.org/abs/") and spec.summary


def test_ema_over_three_steps(models, tmp_path):
    base, experts = models
    results = _chain("ema", base, experts, tmp_path)
    b = _state(base)
    x1, x2, x3 = (_state(e) for e in experts)
    r1, r3 = _state(results[0].out_dir), _state(results[2].out_dir)
    for n in b:
        torch.testing.assert_close(r1[n], x1[n] / 2 + b[n] / 2, rtol=0, atol=1e-6)
        torch.testing.assert_close(r3[n], x3[n] / 2 + x2[n] / 4 + x1[n] / 8 + b[n] / 8, rtol=0, atol=1e-6)
    assert results[2].state == {"method": "ema", "t": 3, "params": {"w": 0.5}}


def test_ema_weight_parameter(models, tmp_path):
    base, experts = models
    results = _chain("ema", base, experts[:2], tmp_path, params={"w": 0.25})
    b, x1, x2, r2 = _state(base), _state(experts[0]), _state(experts[1]), _state(results[1].out_dir)
    for n in b:
        r1 = 0.25 * x1[n] + 0.75 * b[n]
        torch.testing.assert_close(r2[n], 0.25 * x2[n] + 0.75 * r1, rtol=0, atol=1e-6)


def test_continual_task_arithmetic_over_three_steps(models, tmp_path):
    base, experts = models
    results = _chain("continual_task_arithmetic", base, experts, tmp_path)
    b, xs, m = _state(base), [_state(e) for e in experts], _state(results[2].out_dir)
    for n in b:
        expected = b[n] + 0.3 * sum(x[n] - b[n] for x in xs)
        torch.testing.assert_close(m[n], expected, rtol=0, atol=1e-6)


def test_continual_average_is_the_mean_of_the_experts(models, tmp_path):
    base, experts = models
    results = _chain("continual_average", base, experts, tmp_path)
    xs = [_state(e) for e in experts]
    first, last = _state(results[0].out_dir), _state(results[2].out_dir)
    for n in xs[0]:
        assert torch.equal(first[n], xs[0][n])  # θ^(1) = θ_1, θ_0 is not part of the mean
        torch.testing.assert_close(last[n], (xs[0][n] + xs[1][n] + xs[2][n]) / 3, rtol=0, atol=1e-6)


def test_output_reloads_and_lineage_records_method_params_t_state(models, tmp_path):
    from transformers import LlamaForCausalLM

    base, experts = models
    results = _chain("opcm", base, experts, tmp_path)
    res = results[-1]
    assert isinstance(res, MergeResult)
    files = sorted(p.name for p in res.out_dir.iterdir())
    assert files == ["README.md", "config.json", "generation_config.json", "hf_time.json", "merge_config.yaml",
                     "model.safetensors"]
    model = LlamaForCausalLM.from_pretrained(res.out_dir)
    ref = LlamaForCausalLM.from_pretrained(base)
    ref.load_state_dict(_state(res.out_dir), strict=False)
    ids = torch.tensor([[1, 5, 7, 9]])
    torch.testing.assert_close(model(ids).logits, ref(ids).logits)

    lineage = Lineage.load(res.out_dir)
    assert lineage == res.lineage and lineage.kind == "fold" and lineage.method.name == "opcm"
    assert lineage.method.parameters == {"alpha": 0.5} and lineage.state["t"] == 3
    assert lineage.state == res.state
    assert set(res.state) == {"method", "t", "params", "lambda", "norms"} and len(res.state["norms"]) == 3
    assert lineage.previous.ref == str(results[1].out_dir)
    assert [e.ref for e in lineage.experts] == [str(experts[2].absolute())]
    assert lineage.output.files["model.safetensors"] == sha256_file(res.out_dir / "model.safetensors")
    config = yaml.safe_load((res.out_dir / "merge_config.yaml").read_text())
    assert config["merge_method"] == "opcm" and config["previous"] == str(results[1].out_dir)
    assert "Step 3 of a sequential **opcm** merge" in (res.out_dir / "README.md").read_text()
    assert not list(tmp_path.glob(".*"))  # no temp dir or scratch file left behind


@pytest.mark.parametrize("method", ["opcm", "ema"])
def test_refolding_gives_byte_identical_weights(models, tmp_path, method):
    base, experts = models
    results = _chain(method, base, experts, tmp_path)
    again = fold(results[1].out_dir, base, experts[2], method, tmp_path / "again", state=results[1].state,
                 progress=False)
    assert again.state == results[2].state
    a, b = Lineage.load(results[2].out_dir).output.files, Lineage.load(again.out_dir).output.files
    assert a == b and a["model.safetensors"] == sha256_file(again.out_dir / "model.safetensors")


def test_fold_memory_is_a_fixed_set_of_buffers(models, tmp_path, monkeypatch):
    """Every input tensor a method sees is a view of the engine's reusable buffers, sized once for the
    largest tensor; their number depends on the fold's inputs (3), never on t."""
    base, experts = models
    largest = max(i.numel for i in Checkpoint(base).infos.values())
    made = []
    real_buffers = engine._Buffers

    class SpyBuffers(real_buffers):
        def __init__(self, n_sources, *args, **kwargs):
            super().__init__(n_sources, *args, **kwargs)
            made.append(self)

    monkeypatch.setattr(engine, "_Buffers", SpyBuffers)
    spec = get("opcm")
    seen = []

    def spy(previous, base_t, expert, config, ctx, state):
        seen.append((made[-1], [x for x in (previous, base_t, expert) if x is not None]))
        return spec.fn(previous, base_t, expert, config, ctx, state)

    import hf_time.pipeline.plan as plan_mod

    monkeypatch.setattr(plan_mod, "get", lambda name: dataclasses.replace(spec, fn=spy))
    monkeypatch.setattr(Checkpoint, "get", lambda *a: pytest.fail("a fold must read into buffers, not fresh tensors"))
    results = _chain("opcm", base, experts, tmp_path)
    assert results[-1].state["t"] == 3
    # t=1: one pass (3 sources? no previous: base + expert); t=2 and t=3: pass 1 (3 sources) + pass 2 (2).
    assert [len(b.compute) for b in made] == [2, 3, 2, 3, 2]
    for bufs in made:
        assert all(c.numel() == largest for c in bufs.compute)
    for bufs, inputs in seen:
        ptrs = {c.untyped_storage().data_ptr() for c in bufs.compute}
        assert all(x.untyped_storage().data_ptr() in ptrs for x in inputs)


def test_bfloat16_output(models, tmp_path):
    base, experts = models
    res = fold(None, base, experts[0], "ema", tmp_path / "bf16", dtype="bfloat16", progress=False)
    m, b, x1 = _state(res.out_dir), _state(base), _state(experts[0])
    for n in m:
        assert m[n].dtype == torch.bfloat16
        torch.testing.assert_close(m[n].float(), ((x1[n] + b[n]) / 2).bfloat16().float())
    assert json.loads((res.out_dir / "config.json").read_text())["dtype"] == "bfloat16"
    nxt = fold(res.out_dir, base, experts[1], "ema", tmp_path / "bf16-2", state=res.state, progress=False)
    assert nxt.state["t"] == 2  # a bf16 running merge folds on (inputs are upcast to float32)


# -- bad input: each a clear error naming the item, nothing written ----------------------------------


def test_unknown_and_non_sequential_methods(models, tmp_path):
    base, experts = models
    with pytest.raises(UnknownMethodError, match="valid methods: .*opcm"):
        fold(None, base, experts[0], "opcmm", tmp_path / "o")
    with pytest.raises(ConfigError, match="'ties' is of kind 'dense'"):
        fold(None, base, experts[0], "ties", tmp_path / "o")
    with pytest.raises(ConfigError, match="'w'.*<= 1.0"):
        fold(None, base, experts[0], "ema", tmp_path / "o", params={"w": 2})
    assert not (tmp_path / "o").exists()


def test_bad_states_name_the_key(models, tmp_path):
    base, experts = models
    first = fold(None, base, experts[0], "opcm", tmp_path / "one", progress=False)
    prev = first.out_dir
    cases = [
        ({**first.state, "method": "ema"}, "opcm", "'method' is 'ema'"),
        ({k: v for k, v in first.state.items() if k != "lambda"}, "opcm", "missing key 'lambda'"),
        ({k: v for k, v in first.state.items() if k != "t"}, "opcm", "missing key 't'"),
        ({**first.state, "norms": [1.0, 2.0]}, "opcm", "'norms'"),
        ({**first.state, "lambda": -1}, "opcm", "'lambda' must be a positive"),
        ({**first.state, "params": {"alpha": 0.3}}, "opcm", "'alpha' was 0.3"),
        (first.state, "ema", "'method' is 'opcm'"),
        ("nope", "opcm", "must be a mapping"),
    ]
    for state, method, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            fold(prev, base, experts[1], method, tmp_path / "two", state=state, progress=False)
    with pytest.raises(ConfigError, match="without its state"):  # a previous snapshot no fold wrote
        fold(experts[0], base, experts[1], "opcm", tmp_path / "two", progress=False)
    with pytest.raises(ConfigError, match="without `previous`"):
        fold(None, base, experts[1], "opcm", tmp_path / "two", state=first.state, progress=False)
    assert not (tmp_path / "two").exists()


def test_incompatible_expert_or_previous(models, tmp_path):
    base, experts = models
    other = save_tiny_llama(tmp_path / "other", 5, hidden_size=16, intermediate_size=32)
    with pytest.raises(IncompatibleExpertsError, match="shape"):
        fold(None, base, other, "ema", tmp_path / "o", progress=False)
    with pytest.raises(IncompatibleExpertsError, match="shape"):
        fold(other, base, experts[0], "ema", tmp_path / "o", state={"method": "ema", "t": 1, "params": {"w": 0.5}},
             progress=False)
    assert not (tmp_path / "o").exists()


def test_existing_output_is_refused_unless_overwrite(models, tmp_path):
    base, experts = models
    (tmp_path / "o").mkdir()
    with pytest.raises(OutputExistsError):
        fold(None, base, experts[0], "ema", tmp_path / "o", progress=False)
    res = fold(None, base, experts[0], "ema", tmp_path / "o", overwrite=True, progress=False)
    assert (res.out_dir / "model.safetensors").is_file()
