"""Dense merge methods against hand-computed values, plus DARE statistics and global thresholds.

Shared example (base θ_0 = 1 everywhere, n = 3 experts of 5 entries), task vectors τ_i = θ_i − θ_0:
    τ1 = [ 0.5, -0.1, 0.3, -0.8,  0.0]
    τ2 = [-0.6,  0.2, 0.1,  0.4, -0.3]
    τ3 = [ 0.3,  0.1, 0.7,  0.2, -0.9]
"""

import math

import pytest
import torch
from torch.testing import assert_close

from hf_time.merges import TensorContext, get
from hf_time.merges.lines import apply_lines, lines_scale

D = torch.float64
T = lambda *v: torch.tensor(v, dtype=D)  # noqa: E731
BASE = torch.ones(5, dtype=D)
TAUS = [T(0.5, -0.1, 0.3, -0.8, 0.0), T(-0.6, 0.2, 0.1, 0.4, -0.3), T(0.3, 0.1, 0.7, 0.2, -0.9)]
EXPERTS = [BASE + t for t in TAUS]


def ctx(n, weights=None, **kw):
    return TensorContext(name="blocks.0.w", weights=tuple(weights or (1.0,) * n), **kw)


def merge(name, base, experts, params=None, seed=None, **ctx_kw):
    """One tensor merged by ``name``; ``seed`` is DARE's config seed (masks derive from it and the tensor name)."""
    spec = get(name)
    params = {**(params or {}), **({"seed": seed} if seed is not None else {})}
    return spec.fn(base, experts, spec.make_config(params), ctx(len(experts), **ctx_kw))


# -- linear / task arithmetic ------------------------------------------------------------------------
def test_linear_weighted_average_ignores_base():
    a, b = T(1, 2, 3), T(3, 2, 1)
    # weights (1, 3): Σ w θ = [1+9, 2+6, 3+3] = [10, 8, 6]; / Σ w = 4
    assert_close(merge("linear", None, [a, b], weights=(1.0, 3.0)), T(2.5, 2.0, 1.5))
    assert_close(merge("linear", None, [a, b], {"normalize": False}, weights=(1.0, 3.0)), T(10, 8, 6))
    assert_close(merge("linear", T(9, 9, 9), [a, b]), T(2, 2, 2))  # uniform soup, base unused


def test_linear_refuses_zero_weight_sum():
    from hf_time.errors import ConfigError

    with pytest.raises(ConfigError, match="sum to 0"):
        merge("linear", None, [T(1), T(2)], weights=(1.0, -1.0))


def test_task_arithmetic_weights_lambda_normalize():
    # τ1 + 2·τ2 + τ3 = [-0.4, 0.4, 1.2, 0.2, -1.5]
    out = merge("task_arithmetic", BASE, EXPERTS, {"lambda": 0.5}, weights=(1.0, 2.0, 1.0))
    assert_close(out, T(0.8, 1.2, 1.6, 1.1, 0.25))  # 1 + 0.5·sum
    out = merge("task_arithmetic", BASE, EXPERTS, {"lambda": 0.5, "normalize": True}, weights=(1.0, 2.0, 1.0))
    assert_close(out, T(0.95, 1.05, 1.15, 1.025, 0.8125))  # 1 + 0.5·sum/4


# -- TIES ---------------------------------------------------------------------------------------------
def test_ties_trim_elect_disjoint_mean():
    # density 0.4 of 5 -> keep 2 per expert:
    #   trimmed τ1 = [ 0.5, 0, 0,   -0.8,  0  ]
    #   trimmed τ2 = [-0.6, 0, 0,    0.4,  0  ]
    #   trimmed τ3 = [ 0,   0, 0.7,  0,   -0.9]
    # sums [-0.1, 0, 0.7, -0.4, -0.9] -> elected signs [-, +, +, -, -]
    # disjoint mean of agreeing entries: [-0.6/1, 0 (none), 0.7/1, -0.8/1, -0.9/1]
    out = merge("ties", BASE, EXPERTS, {"density": 0.4})
    assert_close(out, T(0.4, 1.0, 1.7, 0.2, 0.1))
    # lambda scales the disjoint mean
    assert_close(merge("ties", BASE, EXPERTS, {"density": 0.4, "lambda": 0.5}), T(0.7, 1.0, 1.35, 0.6, 0.55))


def test_ties_disjoint_mean_divides_by_agreeing_weights():
    # density 1 (mergekit default): no trim. Sums [0.2, 0.2, 1.1, -0.2, -1.2] -> signs [+, +, +, -, -]
    # agreeing: [0.5, 0.3]/2, [0.2, 0.1]/2, [0.3, 0.1, 0.7]/3, [-0.8]/1, [-0.3, -0.9]/2
    out = merge("ties", BASE, EXPERTS)
    assert_close(out, 1 + T(0.4, 0.15, 1.1 / 3, -0.8, -0.6))


def test_ties_per_expert_density():
    # expert 0 keeps 40% ([0.5, 0, 0, -0.8, 0]); expert 1 keeps everything
    c = ctx(2, expert_params=({"density": 0.4}, {}))
    spec = get("ties")
    out = spec.fn(BASE, EXPERTS[:2], spec.make_config({}), c)
    # sums [-0.1, 0.2, 0.1, -0.4, -0.3] -> [-, +, +, -, -]: [-0.6, 0.2, 0.1, -0.8, -0.3]
    assert_close(out, 1 + T(-0.6, 0.2, 0.1, -0.8, -0.3))


def test_ties_global_thresholds_differ_from_per_tensor():
    spec = get("ties")
    config = spec.make_config({"density": 0.4, "threshold_scope": "global"})
    assert spec.global_quantiles(config, {}) == pytest.approx((0.6,))
    assert spec.global_quantiles(spec.make_config({"density": 0.4}), {}) == ()
    # a global |τ| threshold of 0.25 for expert 1 keeps 0.3 as well: [0.5, 0, 0.3, -0.8, 0]
    out = spec.fn(BASE, EXPERTS[:1], config, ctx(1, magnitude_thresholds=((0.25,),)))
    assert_close(out, 1 + T(0.5, 0, 0.3, -0.8, 0))
    per_tensor = merge("ties", BASE, EXPERTS[:1], {"density": 0.4})
    assert_close(per_tensor, 1 + T(0.5, 0, 0, -0.8, 0))
    with pytest.raises(ValueError, match="global"):
        spec.fn(BASE, EXPERTS[:1], config, ctx(1))


def test_global_thresholds_equal_to_local_ones_give_the_same_result():
    from hf_time.merges.kernels import kept_count, kth_largest

    torch.manual_seed(0)
    base = torch.randn(64, 32, dtype=D)
    experts = [base + torch.randn_like(base) for _ in range(3)]
    spec = get("ties")
    thr = tuple((kth_largest((e - base).abs(), kept_count(0.3, base.numel())),) for e in experts)
    glob = spec.fn(base, experts, spec.make_config({"density": 0.3, "threshold_scope": "global"}), ctx(3, magnitude_thresholds=thr))
    assert_close(glob, merge("ties", base, experts, {"density": 0.3}))


# -- DARE ---------------------------------------------------------------------------------------------
def _big(n_experts=2, numel=4000):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(numel, generator=g, dtype=D)
    return base, [base + torch.randn(numel, generator=g, dtype=D) for _ in range(n_experts)]


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_same_seed_same_result(name):
    base, experts = _big()
    a = merge(name, base, experts, {"density": 0.5}, seed=1)
    assert_close(a, merge(name, base, experts, {"density": 0.5}, seed=1), rtol=0, atol=0)
    assert not torch.equal(a, merge(name, base, experts, {"density": 0.5}, seed=2))


def test_dare_masks_differ_per_expert():
    base, experts = _big(1)
    out = merge("dare_linear", base, [experts[0], experts[0]], {"density": 0.5})
    # with one shared mask every entry would be τ·0 or τ·4; independent masks also give τ·2
    ratio = ((out - base) / (experts[0] - base)).round()
    assert set(ratio.unique().tolist()) == {0.0, 2.0, 4.0}


def test_dare_rescale_semantics():
    base, (expert,) = _big(1)
    tau = expert - base
    ratio = lambda out: ((out - base) / tau).round(decimals=6)  # noqa: E731
    kept = ratio(merge("dare_linear", base, [expert], {"density": 0.25}))
    assert set(kept.unique().tolist()) == {0.0, 4.0}  # survivors × 1/density
    assert (kept != 0).double().mean().item() == pytest.approx(0.25, abs=0.03)
    raw = ratio(merge("dare_linear", base, [expert], {"density": 0.25, "rescale": False}))
    assert set(raw.unique().tolist()) == {0.0, 1.0}  # survivors unchanged


def test_dare_full_density_is_task_arithmetic():
    assert_close(merge("dare_linear", BASE, EXPERTS, {"density": 1.0}), 1 + TAUS[0] + TAUS[1] + TAUS[2])
    # dare_ties at density 1 = sign election without normalization:
    # signs [+, +, +, -, -]; agreeing sums [0.8, 0.3, 1.1, -0.8, -1.2]
    assert_close(merge("dare_ties", BASE, EXPERTS, {"density": 1.0}), 1 + T(0.8, 0.3, 1.1, -0.8, -1.2))


def test_dare_expectation_is_task_arithmetic():
    base, experts = _big(2, 2000)
    ta = merge("task_arithmetic", base, experts)
    mean = sum(merge("dare_linear", base, experts, {"density": 0.5}, seed=s) for s in range(300)) / 300
    err = (mean - ta).abs()
    # per entry: std of the estimate ≈ |τ|·sqrt((1-d)/d)/sqrt(300) ≈ 0.06·|τ|
    assert err.mean().item() < 0.08
    assert err.max().item() < 0.6


# -- Breadcrumbs --------------------------------------------------------------------------------------
BA = T(0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0)
BB = T(-1.0, 0.9, -0.8, 0.7, -0.6, 0.5, -0.4, 0.3, -0.2, 0.1)
# density 0.5, gamma 0.1 on 10 entries: drop the top 1, keep the next 5, drop the bottom 4
#   band(BA) = [0, 0, 0, 0, 0.5, -0.6, 0.7, -0.8, 0.9, 0]
#   band(BB) = [0, 0.9, -0.8, 0.7, -0.6, 0.5, 0, 0, 0, 0]


def test_breadcrumbs_band_then_sum():
    zero = torch.zeros(10, dtype=D)
    out = merge("breadcrumbs", zero, [BA, BB], {"density": 0.5, "gamma": 0.1})
    assert_close(out, T(0, 0.9, -0.8, 0.7, -0.1, -0.1, 0.7, -0.8, 0.9, 0))


def test_breadcrumbs_ties_band_then_elect():
    zero = torch.zeros(10, dtype=D)
    # entries 4 and 5 conflict: 0.5 - 0.6 = -0.1 and -0.6 + 0.5 = -0.1 -> elected '-', keep -0.6
    out = merge("breadcrumbs_ties", zero, [BA, BB], {"density": 0.5, "gamma": 0.1})
    assert_close(out, T(0, 0.9, -0.8, 0.7, -0.6, -0.6, 0.7, -0.8, 0.9, 0))


def test_breadcrumbs_global_band():
    spec = get("breadcrumbs")
    config = spec.make_config({"density": 0.5, "gamma": 0.1, "threshold_scope": "global"})
    assert spec.global_quantiles(config, {}) == pytest.approx((0.4, 0.9))
    assert spec.global_quantiles(config, {"density": 0.2, "gamma": 0.3}) == pytest.approx((0.5, 0.7))
    out = spec.fn(torch.zeros(10, dtype=D), [BA], config, ctx(1, magnitude_thresholds=((0.25, 0.75),)))
    assert_close(out, T(0, 0, 0.3, -0.4, 0.5, -0.6, 0.7, 0, 0, 0))  # 0.25 <= |τ| < 0.75


# -- Model Stock --------------------------------------------------------------------------------------
def test_model_stock_two_experts():
    # τ1 = [1, 0], τ2 = [1, 1]: cos = 1/√2, t = 2c/(1+c) = 2(√2 − 1) = 0.828427; mean τ = [1, 0.5]
    base = T(1, -1)
    out = merge("model_stock", base, [base + T(1, 0), base + T(1, 1)])
    assert_close(out, T(1.8284271247, -0.5857864376))


def test_model_stock_three_experts_mean_pairwise_cosine():
    # cos12 = 0, cos13 = cos23 = 1/√2 -> c = √2/3; t = 3c/(1+2c) = 9√2 − 12; mean τ = [2/3, 2/3, 0]
    # t · 2/3 = 6√2 − 8 = 0.4852813742
    zero = torch.zeros(3, dtype=D)
    out = merge("model_stock", zero, [T(1, 0, 0), T(0, 1, 0), T(1, 1, 0)])
    assert_close(out, T(0.4852813742, 0.4852813742, 0))


def test_model_stock_zero_task_vector_and_filter_wise():
    base = T(2, 3)
    # τ1 = 0: its cosines count as 0 -> c = 0 -> t = 0 -> the base
    assert_close(merge("model_stock", base, [base.clone(), base + T(1, 1)]), base)
    zero = torch.zeros(2, 2, dtype=D)
    e1, e2 = T(1, 0, 1, 0).view(2, 2), T(1, 0, 0, 1).view(2, 2)
    # whole tensor: cos = 1/2, t = 2/3; mean τ = [[1, 0], [0.5, 0.5]]
    assert_close(merge("model_stock", zero, [e1, e2]), T(2 / 3, 0, 1 / 3, 1 / 3).view(2, 2))
    # per row: row 0 cos 1 -> t 1 -> [1, 0]; row 1 cos 0 -> t 0 -> [0, 0]
    assert_close(merge("model_stock", zero, [e1, e2], {"filter_wise": True}), T(1, 0, 0, 0).view(2, 2))


def test_model_stock_negative_cosine_gives_base():
    base = T(0, 0)
    assert_close(merge("model_stock", base, [T(1, 0), T(-1, 0.1)]), base)


# -- MagMax -------------------------------------------------------------------------------------------
def test_magmax_picks_largest_magnitude():
    # per entry the largest |τ|: [-0.6 (τ2), 0.2 (τ2), 0.7 (τ3), -0.8 (τ1), -0.9 (τ3)]
    assert_close(merge("magmax", BASE, EXPERTS), 1 + T(-0.6, 0.2, 0.7, -0.8, -0.9))
    assert_close(merge("magmax", BASE, EXPERTS, {"lambda": 0.5}), T(0.7, 1.1, 1.35, 0.6, 0.55))
    # weights compete: τ1·3 = [1.5, -0.3, 0.9, -2.4, 0] wins everywhere except entry 4 (τ3: -0.9)
    assert_close(merge("magmax", BASE, EXPERTS, weights=(3.0, 1.0, 1.0)), 1 + T(1.5, -0.3, 0.9, -2.4, -0.9))
    # a tie in magnitude goes to the first expert
    assert_close(merge("magmax", T(0), [T(0.5), T(-0.5)]), T(0.5))


# -- SLERP --------------------------------------------------------------------------------------------
def test_slerp_orthogonal_vectors():
    s = math.sqrt(0.5)  # sin(π/4) / sin(π/2)
    assert_close(merge("slerp", T(1, 0), [T(0, 1)]), T(s, s))
    assert_close(merge("slerp", T(2, 0), [T(0, 1)]), T(2 * s, s))
    assert_close(merge("slerp", T(1, 0), [T(0, 1)], {"t": 0.0}), T(1, 0))
    assert_close(merge("slerp", T(1, 0), [T(0, 1)], {"t": 1.0}), T(0, 1))
    # t = 1/3 of a right angle: [cos 30°, sin 30°]
    assert_close(merge("slerp", T(1, 0), [T(0, 1)], {"t": 1 / 3}), T(math.sqrt(3) / 2, 0.5))


def test_slerp_lerps_colinear_and_zero_tensors():
    assert_close(merge("slerp", T(1, 1), [T(2, 2)], {"t": 0.25}), T(1.25, 1.25))
    assert_close(merge("slerp", T(1, 0), [T(-1, 0)]), T(0, 0))  # antiparallel: |cos| = 1
    assert_close(merge("slerp", T(0, 0), [T(2, 4)]), T(1, 2))  # zero-norm base


# -- LiNeS --------------------------------------------------------------------------------------------
def test_lines_scale_four_layers():
    a, b = 0.5, 0.3
    assert [lines_scale(i, 4, a, b) for i in range(4)] == pytest.approx([a, a + b / 3, a + 2 * b / 3, a + b])
    assert [lines_scale(i, 4, 0.5, 0.5) for i in range(4)] == pytest.approx([0.5, 2 / 3, 5 / 6, 1.0])
    assert lines_scale(None, 4, a, b) == a
    assert lines_scale(None, None, a, b) == a
    assert lines_scale(0, 1, a, b) == a
    with pytest.raises(ValueError):
        lines_scale(4, 4, a, b)


def test_apply_lines_scales_the_task_vector():
    base, merged = T(1, 1), T(3, 5)
    top = TensorContext(name="h.3.w", weights=(1.0,), layer=3, num_layers=4)
    assert_close(apply_lines(base, merged, top, 0.5, 0.5), T(3, 5))  # scale 1
    first = TensorContext(name="h.0.w", weights=(1.0,), layer=0, num_layers=4)
    assert_close(apply_lines(base, merged, first, 0.5, 0.5), T(2, 3))  # scale 0.5
    emb = TensorContext(name="wte", weights=(1.0,))
    assert_close(apply_lines(base, merged, emb, 0.25, 0.5), T(1.5, 2))  # non-block: α
