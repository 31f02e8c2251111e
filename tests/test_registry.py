"""Registry checks and the contract every dense method honours (parametrized over the registry)."""

import dataclasses
import math

import pytest
import torch

from hf_time.errors import ConfigError, UnknownMethodError
from hf_time.merges import TensorContext, get, list_methods, param, register

DENSE = list_methods("dense")
IDS = [s.name for s in DENSE]
EXPECTED = {
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
    "model_stock", "magmax", "slerp",
}  # fmt: skip


def _inputs(spec, shape=(6, 5), dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    n = spec.max_experts if spec.max_experts is not None else max(spec.min_experts, 3)
    base = torch.randn(shape, generator=g, dtype=dtype)
    experts = [base + torch.randn(shape, generator=g, dtype=dtype) for _ in range(n)]
    ctx = TensorContext(name="model.layers.0.w", weights=(1.0,) * n)
    return (base if spec.uses_base else None), experts, ctx


def test_every_dense_method_is_registered():
    assert EXPECTED <= set(IDS)


def test_declared_expert_counts():
    assert get("slerp").min_experts == 1 and get("slerp").max_experts == 1
    assert get("model_stock").min_experts == 2 and get("model_stock").max_experts is None
    for name in EXPECTED - {"slerp", "model_stock"}:
        assert get(name).min_experts == 1 and get(name).max_experts is None, name
    assert get("linear").uses_base is False
    assert all(get(n).uses_base for n in EXPECTED - {"linear"})


@pytest.mark.parametrize("spec", DENSE, ids=IDS)
def test_paper_and_summary(spec):
    assert spec.paper and spec.paper.startswith("https://")
    assert spec.summary


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spec", DENSE, ids=IDS)
def test_pure_shape_dtype_device_deterministic(spec, dtype):
    base, experts, ctx = _inputs(spec, dtype=dtype)
    config = spec.make_config({})
    before = [t.clone() for t in [*experts, *([base] if base is not None else [])]]
    out = spec.fn(base, experts, config, ctx)
    after = [*experts, *([base] if base is not None else [])]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "inputs were mutated"
    assert out.shape == experts[0].shape and out.dtype == dtype and out.device == experts[0].device
    assert all(out.data_ptr() != t.data_ptr() for t in after), "the result aliases an input"
    assert torch.equal(out, spec.fn(base, experts, config, ctx))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec", DENSE, ids=IDS)
def test_one_dimensional_and_scalar_tensors(spec):
    for shape in [(7,), ()]:
        base, experts, ctx = _inputs(spec, shape=shape)
        assert spec.fn(base, experts, spec.make_config({}), ctx).shape == shape


@pytest.mark.parametrize("spec", DENSE, ids=IDS)
def test_experts_equal_to_the_base_give_the_base(spec):
    _, experts, ctx = _inputs(spec)
    same = [experts[0].clone() for _ in experts]
    out = spec.fn(experts[0] if spec.uses_base else None, same, spec.make_config({}), ctx)
    torch.testing.assert_close(out, experts[0])


@pytest.mark.parametrize("spec", DENSE, ids=IDS)
def test_unknown_parameter_is_named_with_the_valid_ones(spec):
    with pytest.raises(ConfigError) as err:
        spec.make_config({"nope": 1})
    message = str(err.value)
    assert "'nope'" in message
    for p in spec.parameters():
        assert p.name in message


def _bad_values():
    cases = []
    for spec in DENSE:
        for f in dataclasses.fields(spec.config_cls):
            m = f.metadata
            name = m.get("alias") or f.name
            if m.get("choices"):
                cases.append((spec.name, name, "bogus", "one of"))
            for key, op, delta in (("ge", ">=", -0.5), ("gt", ">", 0.0), ("le", "<=", 0.5), ("lt", "<", 0.0)):
                if m.get(key) is not None:
                    step = delta * 2 if f.type in (int, "int") else delta  # integer fields: a whole step
                    bad = m[key] + step if step else m[key]
                    cases.append((spec.name, name, bad, f"{op} {m[key]}"))
    return cases


@pytest.mark.parametrize("method,name,value,bound", _bad_values())
def test_out_of_range_value_names_the_bound(method, name, value, bound):
    with pytest.raises(ConfigError) as err:
        get(method).make_config({name: value})
    assert name in str(err.value) and bound in str(err.value)


def test_public_names_follow_mergekit():
    names = {s.name: {p.name for p in s.parameters()} for s in DENSE}
    assert {"density", "lambda", "normalize"} <= names["ties"]
    assert {"density", "rescale", "lambda", "normalize"} <= names["dare_ties"]
    assert {"density", "gamma"} <= names["breadcrumbs"]
    assert "t" in names["slerp"] and "normalize" in names["linear"]
    per_expert = {p.name for p in get("breadcrumbs").parameters() if p.per_expert}
    assert per_expert == {"density", "gamma"}
    assert get("ties").make_config({"lambda": "0.3"}).lambda_ == 0.3  # CLI strings are coerced


@pytest.mark.parametrize("spec", [s for s in DENSE if "threshold_scope" in {p.name for p in s.parameters()}], ids=lambda s: s.name)
def test_threshold_methods_declare_global_quantiles(spec):
    assert spec.global_quantiles is not None
    assert spec.global_quantiles(spec.make_config({"density": 0.3}), {}) == ()
    q = spec.global_quantiles(spec.make_config({"density": 0.3, "threshold_scope": "global"}), {})
    assert q and list(q) == sorted(q) and all(0 <= x <= 1 for x in q)


def test_unknown_method_lists_valid_names():
    with pytest.raises(UnknownMethodError) as err:
        get("nope")
    assert "'nope'" in str(err.value)
    for name in EXPECTED:
        assert name in str(err.value)
    assert isinstance(err.value, KeyError)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    x: float = param(1.0, "x")


def _fn(base, experts, config, ctx):
    """A test method."""
    return base


def test_register_refuses_duplicates_bad_names_and_mutable_configs():
    with pytest.raises(ValueError, match="already registered"):
        register("linear", kind="dense", config=_Cfg)(_fn)

    for bad in ("Linear", "my-merge", "9lives", ""):
        with pytest.raises(ValueError, match="snake_case"):
            register(bad, kind="dense", config=_Cfg)(_fn)

    @dataclasses.dataclass
    class Mutable:
        x: float = 1.0

    with pytest.raises(ValueError, match="frozen"):
        register("test_mutable_config", kind="dense", config=Mutable)(_fn)
    with pytest.raises(ValueError, match="kind"):
        register("test_bad_kind", kind="sparse", config=_Cfg)(_fn)
    assert "test_mutable_config" not in {s.name for s in list_methods()}


def test_make_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        get("ties").make_config({"density": 2, "lambda": "x", "nope": 1})
    assert len(err.value.problems) == 3
    assert math.isclose(get("ties").make_config({"density": "0.5"}).density, 0.5)


NATIVE = [s for s in DENSE if s.native_inputs]


@pytest.mark.parametrize("spec", NATIVE, ids=[s.name for s in NATIVE])
def test_native_input_methods_match_float32_inputs(spec):
    """Methods that read bf16 checkpoints directly must give what they give on float32 copies."""
    base, experts, ctx = _inputs(spec, shape=(64, 33))
    config = spec.make_config({"density": 0.5} if "density" in {p.name for p in spec.parameters()} else {})
    b16 = None if base is None else base.bfloat16()
    e16 = [e.bfloat16() for e in experts]
    native = spec.fn(b16, e16, config, ctx)
    converted = spec.fn(None if b16 is None else b16.float(), [e.float() for e in e16], config, ctx)
    assert native.dtype == torch.float32
    torch.testing.assert_close(native, converted, rtol=0, atol=0)


def test_the_memory_bound_family_reads_stored_dtypes():
    assert {s.name for s in NATIVE} >= {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
                                        "breadcrumbs_ties"}
