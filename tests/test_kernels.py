"""Kernels of the task-vector methods, on literal tensors computed by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from hf_time.merges import kernels

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def test_kept_count_rounds_down_like_mergekit():
    assert kernels.kept_count(0.4, 5) == 2
    assert kernels.kept_count(0.29, 100) == 28  # 0.29 * 100 = 28.999999999999996 in floating point
    assert kernels.kept_count(0.05, 10) == 0
    assert kernels.kept_count(1.0, 7) == 7


def test_kth_largest_uses_selection_and_infinity_for_zero():
    values = T(0.1, 0.9, 0.5, 0.3)
    assert kernels.kth_largest(values, 1) == pytest.approx(0.9)
    assert kernels.kth_largest(values, 2) == pytest.approx(0.5)
    assert kernels.kth_largest(values, 4) == pytest.approx(0.1)
    assert kernels.kth_largest(values, 0) == math.inf


def test_task_vectors_are_a_fresh_stack():
    base, a, b = T(1, 1), T(2, 0), T(1, 3)
    tvs = kernels.task_vectors(base, [a, b])
    assert_close(tvs, T(1, -1, 0, 2).view(2, 2))
    tvs.zero_()
    assert_close(a, T(2, 0))  # not a view of an input


def test_trim_magnitude_keeps_top_k():
    tv = T(0.5, -0.1, 0.3, -0.8, 0.0)
    # density 0.4 of 5 -> k = 2: |-0.8| and |0.5| survive
    assert_close(kernels.trim_magnitude_(tv.clone(), 0.4), T(0.5, 0, 0, -0.8, 0))


def test_trim_magnitude_keeps_exactly_k_with_ties_in_index_order():
    # k = 2 but three entries share the 2nd largest magnitude 0.5: the first two (by index) are kept,
    # so density means what it says even for bf16 task vectors full of equal values
    assert_close(kernels.trim_magnitude_(T(0.5, -0.5, 0.5, 0.1), 0.5), T(0.5, -0.5, 0, 0))
    assert_close(kernels.trim_magnitude_(T(0.1, 0.5, 0.9, 0.5, 0.5), 0.4), T(0, 0.5, 0.9, 0, 0))


def test_top_mask_counts_exactly():
    mag = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.7, 0.0]).double()
    assert kernels.top_mask(mag, 3).tolist() == [True, True, False, False, True, False]
    assert kernels.top_mask(mag, 0).sum() == 0 and kernels.top_mask(mag, 6).all()
    g = torch.Generator().manual_seed(0)
    big = torch.randint(0, 5, (1000,), generator=g).double()  # heavy ties
    for m in (1, 137, 500, 999):
        mask = kernels.top_mask(big, m)
        assert int(mask.sum()) == m and big[mask].min() >= big[~mask].max()


def test_trim_magnitude_zero_count_and_full_density():
    assert_close(kernels.trim_magnitude_(T(1, 2, 3), 0.2), T(0, 0, 0))  # int(0.6) = 0 kept
    tv = T(1, -2, 3)
    assert kernels.trim_magnitude_(tv, 1.0) is tv
    assert_close(tv, T(1, -2, 3))


def test_trim_magnitude_with_a_given_threshold():
    # a global threshold of 0.25 keeps 3 entries where the per-tensor top-40% keeps 2
    assert_close(kernels.trim_magnitude_(T(0.5, -0.1, 0.3, -0.8, 0.0), 0.4, 0.25), T(0.5, 0, 0.3, -0.8, 0))


BAND = (0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0)


def test_trim_band_drops_outliers_and_small_entries():
    # 10 entries, gamma 0.1 -> drop the top 1 (|-1.0|); density 0.5 -> keep the next 5; drop the bottom 4
    out = kernels.trim_band_(T(*BAND), 0.5, 0.1)
    assert_close(out, T(0, 0, 0, 0, 0.5, -0.6, 0.7, -0.8, 0.9, 0))


def test_trim_band_drops_fewer_outliers_to_keep_density():
    # density 0.9 keeps 9, gamma 0.2 would drop 2: only 1 outlier is dropped (mergekit's rule)
    out = kernels.trim_band_(T(*BAND), 0.9, 0.2)
    assert_close(out, T(0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, 0))


def test_trim_band_without_outliers_on_a_small_tensor():
    # int(0.01 * 10) = 0 outliers: plain top-5 (mergekit's [n_bot:-0] slice would zero everything)
    out = kernels.trim_band_(T(*BAND), 0.5, 0.01)
    assert_close(out, T(0, 0, 0, 0, 0, -0.6, 0.7, -0.8, 0.9, -1.0))


def test_trim_band_with_given_thresholds():
    out = kernels.trim_band_(T(*BAND), 0.5, 0.1, (0.25, 0.75))  # keep 0.25 <= |τ| < 0.75
    assert_close(out, T(0, 0, 0.3, -0.4, 0.5, -0.6, 0.7, 0, 0, 0))
    out = kernels.trim_band_(T(*BAND), 0.5, 0.0, (0.45, 1.0))  # gamma 0: the max is not an outlier
    assert_close(out, T(0, 0, 0, 0, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0))


def test_quantile_fractions():
    assert kernels.topk_fractions(1.0) == ()
    assert kernels.topk_fractions(0.25) == pytest.approx((0.75,))
    assert kernels.band_fractions(0.5, 0.1) == pytest.approx((0.4, 0.9))
    assert kernels.band_fractions(0.9, 0.2) == pytest.approx((0.0, 0.9))
    assert kernels.band_fractions(1.0, 0.1) == ()


def test_random_drop_is_seeded_and_keeps_about_density():
    tv = torch.ones(20_000, dtype=torch.float64)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = kernels.random_drop_(tv.clone(), 0.3, g(1))
    assert_close(a, kernels.random_drop_(tv.clone(), 0.3, g(1)))
    assert not torch.equal(a, kernels.random_drop_(tv.clone(), 0.3, g(2)))
    assert set(a.unique().tolist()) == {0.0, 1.0}  # no rescale in the kernel
    assert a.mean().item() == pytest.approx(0.3, abs=0.02)


def test_sign_agreement_sum_rule():
    weighted = torch.stack([T(0.5, 0, 0, -0.8, 0), T(-0.6, 0, 0, 0.4, 0), T(0, 0, 0.7, 0, -0.9)])
    # column sums -0.1, 0, 0.7, -0.4, -0.9 -> elected signs -, + (sum 0), +, -, -; zeros never agree
    expected = torch.tensor([[0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]], dtype=torch.bool)
    sign = kernels.elected_sign(weighted)
    positive = sign > 0
    assert positive.tolist() == [False, True, True, False, False]
    assert sign.tolist() == [-1, 1, 1, -1, -1]
    kept = weighted.clone()
    magnitudes = torch.stack([kernels.agreeing_magnitudes_(kept[i], sign) for i in range(3)])
    assert torch.equal(magnitudes > 0, expected)
    assert_close(kept, weighted.abs() * expected)  # agreeing magnitudes, disagreeing entries zeroed, in place


def test_generalized_task_arithmetic_guards_the_divisors():
    base = T(1, 1)
    # weights sum to 0 with normalize: the divisor falls back to 1 (mergekit)
    out = kernels.generalized_task_arithmetic(base, T(1, 2, 3, 4).view(2, 2), (1.0, -1.0), consensus=False, normalize=True, lambda_=1.0)
    assert_close(out, T(1 + 1 - 3, 1 + 2 - 4))
    # no agreeing entry in a column (all zero): divisor 1, delta 0
    out = kernels.generalized_task_arithmetic(base, T(0, 2, 0, 4).view(2, 2), (1.0, 1.0), consensus=True, normalize=True, lambda_=2.0)
    assert_close(out, T(1, 1 + 2 * 3))


def test_generalized_task_arithmetic_scales_are_not_in_the_divisor():
    # DARE rescale: τ·(w/d), normalized by Σ w only: ((1·2 + 3·2) / 2) = 4
    out = kernels.generalized_task_arithmetic(T(0), T(1, 3).view(2, 1), (1.0, 1.0), consensus=False, normalize=True, lambda_=1.0, scales=(2.0, 2.0))
    assert_close(out, T(4))


def _sorted_rule(tv, start, stop):
    """The rule the trims follow, by a stable sort: keep magnitude ranks start+1..stop, ties in index order."""
    order = torch.sort(tv.abs().reshape(-1), descending=True, stable=True).indices
    keep = torch.zeros(tv.numel(), dtype=torch.bool)
    keep[order[start:stop]] = True
    return tv * keep.view(tv.shape)


def _bf16_task_vector(shape, seed):
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(shape, generator=g) * 0.02).bfloat16()
    return (base.float() + 0.003 * torch.randn(shape, generator=g)).bfloat16().float() - base.float()


def test_trims_of_a_large_tied_task_vector_follow_the_sorted_rule():
    # bf16 task vectors tie thousands of entries at the cut
    tv = _bf16_task_vector((400, 700), 0)
    n = tv.numel()
    out = kernels.trim_magnitude_(tv.clone(), 0.2)
    assert torch.equal(out, _sorted_rule(tv, 0, int(0.2 * n)))  # dropped zeros may be +0.0 (see MagnitudeTrim)
    out = kernels.trim_band_(tv.clone(), 0.3, 0.05)
    n_top = int(0.05 * n)
    assert torch.equal(out.view(torch.int32), _sorted_rule(tv, n_top, n_top + int(0.3 * n)).view(torch.int32))


def test_global_quantiles_through_the_kernels_are_exact():
    from hf_time.engine import quantile_values

    mags = _bf16_task_vector((300, 1000), 1).abs_()
    ranked = torch.sort(mags.reshape(-1), descending=True).values
    n = mags.numel()
    got = quantile_values(mags, (0.8, 0.35))
    assert got == (float(ranked[kernels.kept_count(0.2, n) - 1]), float(ranked[kernels.kept_count(0.65, n) - 1]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_all_finite_is_exact_including_sums_that_overflow(dtype):
    from hf_time.merges.kernels import all_finite

    finite = torch.linspace(-3, 3, 1001).to(dtype)
    assert all_finite(finite)
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = finite.clone()
        t[517] = bad
        assert not all_finite(t), bad
    both = finite.clone()
    both[1], both[2] = float("inf"), float("-inf")  # their sum is NaN: still caught
    assert not all_finite(both)
    huge = torch.full((8,), torch.finfo(dtype).max, dtype=dtype)  # every element finite, the sum overflows
    assert not bool(torch.isfinite(huge.sum())) and all_finite(huge)
    assert all_finite(torch.arange(10))  # integer tensors hold no NaN


@pytest.mark.parametrize("bracket_from", [0, 1 << 62])  # ranked piece by piece / concatenated (small models)
def test_global_quantiles_of_a_model_equal_those_of_its_concatenated_task_vectors(tmp_path, monkeypatch, bracket_from):
    """engine.magnitude_quantiles ranks |θ_i − θ_0| tensor by tensor, reading the checkpoints in place;
    the values are those of quantile_values over the concatenated float32 |τ_i| (the rule before)."""
    from tiny import save_tiny_llama

    from hf_time import engine
    from hf_time.io import Checkpoint
    from hf_time.merges import bitselect, selection

    base_dir = save_tiny_llama(tmp_path / "base", 0, dtype=torch.bfloat16)
    experts = [Checkpoint(save_tiny_llama(tmp_path / f"e{i}", i, base=base_dir, dtype=torch.bfloat16)) for i in (1, 2, 3)]
    base = Checkpoint(base_dir)
    names = [n for n, i in base.infos.items() if i.is_float]
    fractions = [(0.5,), (), (0.3, 0.9)]  # the second expert needs none (e.g. density 1)
    expected = tuple(engine.quantile_values(torch.cat([(e.get(n).float() - base.get(n).float()).abs().reshape(-1)
                                                        for n in names]), f) for e, f in zip(experts, fractions))
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", bracket_from)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 1000)
    if bracket_from == 0:  # the whole-model |τ| is never gathered
        monkeypatch.setattr(selection.torch, "cat", lambda *a, **k: pytest.fail("the task vectors were concatenated"))
    assert engine.magnitude_quantiles(base, experts, fractions, progress=False) == expected
