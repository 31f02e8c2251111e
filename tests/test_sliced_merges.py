"""Merges computed slice by slice equal merges computed on whole tensors, bit for bit.

Task arithmetic and linear run on cache-sized slices in the engine (``elementwise`` methods); TIES and
Breadcrumbs decide their per-tensor thresholds over whole task vectors (ranked chunk by chunk from θ_i
and θ_0, never held whole), then trim, elect and combine slice by slice, carrying the count of ties
still to keep from one slice to the next (or, when the ranking found where the last kept tie lies, the
position of the next slice). These tests force tiny slices, chunks and bracket sizes so
that every boundary case is crossed many times on a small tensor, and compare with (1) the same
method at the default sizes (one slice here) and (2) an independent reference built from a stable
sort, on bf16 data where a fifth of the entries tie at the threshold, as real checkpoints do.
"""

from __future__ import annotations

import functools

import pytest
import torch

from hf_time.merges import bitselect, get, kernels, selection
from hf_time.merges import task_arithmetic as ta
from hf_time.merges.registry import TensorContext

SHAPE = (97, 131)  # 12,707 entries: not a multiple of any slice or chunk size below


def _bf16_experts(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """θ_0 and θ_i = bf16(θ_0 + small noise): task vectors with many exact zeros and ties."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g).to(torch.bfloat16)
    experts = [(base.float() + 0.01 * torch.randn(SHAPE, generator=g)).to(torch.bfloat16) for _ in range(n)]
    return base, experts


@pytest.fixture
def tiny_slices(monkeypatch):
    """Slices of 1000 entries, chunks of 2048, the sampled bracket from 4096 entries (and a small sample)."""
    monkeypatch.setattr(bitselect, "SLICE", 1000)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 2048)
    monkeypatch.setattr(bitselect, "SAMPLE", 512)
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", 4096)
    monkeypatch.setattr(selection, "NUMPY_TIED_FROM", 4096)


def _merge(method: str, params: dict, base, experts, *, weights=None, expert_params=(), thresholds=None):
    spec = get(method)
    config = spec.make_config(params, n_experts=len(experts))
    ctx = TensorContext(name="w", weights=tuple(weights or [1.0] * len(experts)), expert_params=expert_params,
                        magnitude_thresholds=thresholds)
    return spec.fn(base, experts, config, ctx)


CASES = [
    ("ties", {"density": 0.5}, {}),
    ("ties", {"density": 0.2, "normalize": False, "lambda": 0.7}, {}),
    ("ties", {"density": 0.5}, {"weights": [0.5, 1.0, 2.0]}),
    ("ties", {"density": 0.5}, {"expert_params": ({"density": 0.3}, {}, {"density": 1.0})}),
    ("breadcrumbs", {"density": 0.6, "gamma": 0.05}, {}),
    ("breadcrumbs_ties", {"density": 0.4, "gamma": 0.1}, {}),
    ("task_arithmetic", {"lambda": 0.7}, {}),
    ("linear", {}, {"weights": [0.2, 0.3, 0.5]}),
    ("dare_linear", {"density": 0.6, "seed": 3}, {}),
    ("dare_ties", {"density": 0.4, "seed": 5}, {"weights": [0.5, 1.0, 2.0]}),
    ("dare_ties", {"density": 0.5, "seed": 1}, {"expert_params": ({"density": 0.3}, {}, {"density": 1.0})}),
]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


@pytest.mark.parametrize("method,params,extra", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_slices_equal_whole_tensors_bit_for_bit(method, params, extra, monkeypatch):
    base, experts = _bf16_experts()
    whole = _merge(method, params, base, experts, **extra)
    monkeypatch.setattr(bitselect, "SLICE", 1000)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 2048)
    monkeypatch.setattr(bitselect, "SAMPLE", 512)
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", 4096)
    monkeypatch.setattr(selection, "NUMPY_TIED_FROM", 4096)
    sliced = _merge(method, params, base, experts, **extra)
    assert sliced.dtype == whole.dtype == torch.float32
    assert torch.equal(_bits(sliced), _bits(whole))


@pytest.mark.parametrize("cores", [1, 3], ids=["drawn-here", "drawn-ahead"])
@pytest.mark.parametrize("method,params,extra", [c for c in CASES if c[0].startswith("dare")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_dare_sliced_draws_what_one_draw_over_the_whole_tensor_would(method, params, extra, cores, monkeypatch):
    """DARE drops slice by slice (RandomDrop); the merge is the one of drawing over whole stacked task vectors
    (how DARE merged before), bit for bit: a CPU generator yields torch.rand's numbers in index order, whether
    the slices' masks are drawn on the merging thread or ahead, each expert's on a thread of its own."""
    from hf_time.merges import seeded_generator, workers

    monkeypatch.setattr(bitselect, "SLICE", 1000)
    monkeypatch.setattr(workers, "count", lambda: cores)
    base, experts = _bf16_experts(seed=6)
    config = get(method).make_config(params, n_experts=len(experts))
    weights = extra.get("weights", [1.0] * len(experts))
    density = [dict(p).get("density", config.density) for p in extra.get("expert_params", ({},) * 3)]
    b = base.float()
    tvs = kernels.task_vectors(b, experts)
    for i in range(len(experts)):
        kernels.random_drop_(tvs[i], density[i], seeded_generator(config.seed, "w", offset=i))
    scales = [1.0 / d if d < 1 else 1.0 for d in density] if config.rescale else None
    expected = kernels.generalized_task_arithmetic(b, tvs, weights, consensus=method == "dare_ties",
                                                   normalize=config.normalize, lambda_=config.lambda_, scales=scales)
    got = _merge(method, params, base, experts, **extra)
    assert torch.equal(_bits(got), _bits(expected))


def _reference_ties(base, experts, density: float) -> torch.Tensor:
    """TIES from its definition: keep the int(density·n) largest |τ_i| (ties by index, via a stable
    sort), elect the sign of Σ τ_i (+ at 0), average the agreeing entries."""
    b = base.float().reshape(-1)
    kept = []
    for e in experts:
        tau = e.float().reshape(-1) - b
        m = int(density * tau.numel())
        order = torch.sort(tau.abs(), descending=True, stable=True).indices[:m]
        mask = torch.zeros_like(tau)
        mask[order] = 1.0
        kept.append(tau * mask)
    stack = torch.stack(kept)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (stack * sign) > 0
    merged = (stack * agree).sum(0) / agree.sum(0).clamp_min(1)
    return (b + merged).reshape(base.shape)


def test_sliced_ties_matches_a_reference_from_its_definition(tiny_slices):
    base, experts = _bf16_experts(seed=1)
    tau = experts[0].float() - base.float()
    m = int(0.5 * tau.numel())
    kth = torch.sort(tau.abs().reshape(-1), descending=True).values[m - 1]
    assert int((tau.abs() == kth).sum()) > 1000  # the case this is about: a long run of ties at the threshold
    got = _merge("ties", {"density": 0.5}, base, experts)
    assert torch.equal(got, _reference_ties(base, experts, 0.5))


def test_a_trim_keeps_exactly_the_m_largest_across_slices(tiny_slices):
    base, experts = _bf16_experts(seed=2)
    flat, flat_base = experts[0].reshape(-1), base.reshape(-1)
    tau = flat.float() - flat_base.float()
    m = int(0.3 * tau.numel())
    trim = ta.kernels.magnitude_trim(flat, 0.3, minus=flat_base)
    trimmed = torch.cat([trim.apply_(tau[lo:lo + 1000].clone()) for lo in range(0, tau.numel(), 1000)])
    expected = torch.zeros_like(tau)
    expected[torch.sort(tau.abs(), descending=True, stable=True).indices[:m]] = 1.0
    assert float(tau.abs()[expected.bool()].min()) > 0  # so the kept entries are exactly the non-zero ones
    assert int(torch.count_nonzero(trimmed)) == m
    assert torch.equal(trimmed, tau * expected)


def test_global_threshold_scope_is_unchanged_by_slicing(monkeypatch):
    base, experts = _bf16_experts(seed=3)
    taus = [(e.float() - base.float()).abs() for e in experts]
    thresholds = tuple((float(torch.quantile(t.reshape(-1)[:10000], 0.5)),) for t in taus)
    params = {"density": 0.5, "threshold_scope": "global"}
    whole = _merge("ties", params, base, experts, thresholds=thresholds)
    monkeypatch.setattr(bitselect, "SLICE", 777)
    sliced = _merge("ties", params, base, experts, thresholds=thresholds)
    assert torch.equal(_bits(sliced), _bits(whole))


def test_thresholds_of_a_difference_equal_those_of_the_materialized_task_vector(tiny_slices):
    base, experts = _bf16_experts(seed=4)
    tau = experts[1].float() - base.float()
    for ms in ([1], [500, 6353], [12706, 12707]):
        direct = selection.thresholds(experts[1], ms, absolute=True, minus=base)
        assert direct == selection.thresholds(tau, ms, absolute=True)
    assert selection.thresholds(experts[1], [10], minus=base) == selection.thresholds(tau, [10])


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties", "task_arithmetic", "pcb"])
def test_empty_tensors_merge_to_empty_tensors(method):
    base = torch.zeros(0, 4, dtype=torch.bfloat16)
    params = {"density": 0.5} if method in ("ties", "breadcrumbs_ties") else {}
    out = _merge(method, params, base, [base.clone(), base.clone()])
    assert out.shape == (0, 4)


class _MaskOnly(selection.MagnitudeTrim):
    """A trim that always counts ties and multiplies by a float mask (dropped negative entries become -0.0),
    as every trim did before the one-pass ``hardshrink`` slices (which write +0.0)."""

    apply_ = selection.MagnitudeTrim._mask_


@pytest.mark.parametrize("scope", ["tensor", "global"])
@pytest.mark.parametrize("weights,normalize,consensus", [
    ((1.0, 1.0, 1.0), True, True), ((0.5, 1.0, 2.0), True, True), ((1.0, 1.0, 1.0), False, True),
    ((1.0, -1.0, 0.5), False, True),
    ((0.5, 1.0, 2.0), True, False),  # Breadcrumbs without outliers (gamma 0) trims the top too, and sums
])
def test_the_sign_of_trimmed_zeros_never_reaches_a_ties_merge(monkeypatch, weights, normalize, consensus, scope):
    """A trimmed entry may be -0.0 or +0.0 (MagnitudeTrim); the merge adds the trimmed task vectors onto +0.0,
    so its bits are those of the float-mask trims, even where the base itself is -0.0. Per-tensor trims (top-m
    with a known cut) and trims at global thresholds (|τ| >= lo) alike."""
    monkeypatch.setattr(bitselect, "SLICE", 1000)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 2048)
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", 4096)
    g = torch.Generator().manual_seed(4)
    base = torch.randn(512, 515, generator=g).to(torch.bfloat16)  # big enough for the bracket to sit in a run of ties
    experts = [(base.float() + 0.01 * torch.randn(base.shape, generator=g)).to(torch.bfloat16) for _ in range(3)]
    base.view(-1)[::7] = -0.0
    experts[0].view(-1)[::14] = -0.0  # the same as the base there: a zero task vector entry
    combine = functools.partial(kernels.generalized_task_arithmetic, weights=weights, consensus=consensus,
                                normalize=normalize, lambda_=1.0)
    bands = [kernels.magnitude_ranks(base.numel(), 0.5)] * 3
    medians = [float((e.float() - base.float()).abs().median()) for e in experts]  # global thresholds

    def trims(kind):
        if scope == "global":
            return [kind.between(lo) for lo in medians]
        return kind.ranks_each(experts, bands, minus=base)

    def trimmed(kind):  # the trimmed task vectors, then the merge, with fresh trims of that kind
        tvs = [selection.apply_trim_(e.float() - base.float(), trim) for e, trim in zip(experts, trims(kind))]
        return tvs, ta._merge_slices(base, experts, trims(kind), combine)

    fast = trims(selection.MagnitudeTrim)
    assert all(trim._shrink is not None for trim in fast)  # the one-pass trims are the ones compared
    fast_tvs, got = trimmed(selection.MagnitudeTrim)
    mask_tvs, expected = trimmed(_MaskOnly)
    assert all(torch.equal(a, b) for a, b in zip(fast_tvs, mask_tvs))  # the same values...
    assert not all(torch.equal(_bits(a), _bits(b)) for a, b in zip(fast_tvs, mask_tvs))  # ...but zeros of both signs
    assert torch.equal(_bits(got), _bits(expected))
