"""PCB-merging and DAREx-q against hand-computed values on small tensors."""

import math

import pytest
import torch
from torch.testing import assert_close

from hf_time.merges import TensorContext, get
from hf_time.merges.darex import analytical_q, phi
from hf_time.merges.pcb import clamp_ranks, pcb_scores, row_minmax

D = torch.float64
T = lambda *v: torch.tensor(v, dtype=D)


def merge(name, base, experts, params=None, weights=None):
    spec = get(name)
    ctx = TensorContext(name="blocks.0.w", weights=tuple(weights or (1.0,) * len(experts)))
    return spec.fn(base, experts, spec.make_config(params or {}), ctx)


# -- PCB --------------------------------------------------------------------------------------------
def test_pcb_helpers():
    assert_close(row_minmax(T(1, 3, 2).reshape(1, 3)), T(0, 1, 0.5).reshape(1, 3))
    assert_close(row_minmax(T(2, 2).reshape(1, 2)), T(0, 0).reshape(1, 2))  # constant row: 0, not 0/0
    # d = 4: low rank int(4·0.25) = 1 -> 2nd smallest; high rank int(4·(1−0.25))−1 = 2 -> 3rd smallest
    assert_close(clamp_ranks(T(4, 1, 3, 2).reshape(1, 4), 0.25, 0.25), T(3, 2, 3, 2).reshape(1, 4))


def _clamp_ranks_by_sort(x, low, high):
    """The reference's clamp, as it is written there (and was here): sort each row, index it."""
    d = x.shape[1]
    ordered = torch.sort(x, dim=1).values
    return torch.maximum(torch.minimum(x, ordered[:, int(d * (1 - high)) - 1].unsqueeze(1)),
                         ordered[:, int(d * low)].unsqueeze(1))


@pytest.mark.parametrize("path", ["partition", "bracket"])
@pytest.mark.parametrize("d", [1, 2, 7, 1000, 50_000])
def test_clamp_ranks_by_selection_equals_the_sorted_reference(monkeypatch, path, d):
    """clamp_ranks finds its two order statistics by exact selection, not a sort: the same clamped values
    for every row, with ties (16-bit task vectors), both clip ends of PCB (1e-4 each, and 1 − ratio / the
    max) and tiny rows (an index of -1 is the largest, as in the reference)."""
    from hf_time.merges import bitselect, selection

    if path == "bracket":  # the sampled bracket and its counting pass, in small chunks
        monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", 64)
        monkeypatch.setattr(bitselect, "CPU_CHUNK", 999)
    g = torch.Generator().manual_seed(d)
    rows = [torch.randn(d, generator=g, dtype=torch.float64),
            (torch.randn(d, generator=g) * 0.02).bfloat16().float() - (torch.randn(d, generator=g) * 0.02).bfloat16().float(),
            torch.randint(0, 3, (d,), generator=g).float()]
    for x in rows:
        x = x.reshape(1, d).repeat(2, 1) * torch.tensor([[1.0], [-0.5]], dtype=x.dtype)
        for low, high in [(1e-4, 1e-4), (0.9, 0.0), (0.25, 0.25), (0.0, 0.0)]:
            got, want = clamp_ranks(x, low, high), _clamp_ranks_by_sort(x, low, high)
            assert got.dtype == want.dtype and torch.equal(got, want), (low, high, x.dtype)


def _pcb_by_the_formula(base, experts, ratio, weights, lambda_):
    """PCB written out-of-place, op by op as the module docstring gives it (the code before it worked in place)."""
    n = len(experts)
    tvs = torch.stack([e.to(base.dtype) - base for e in experts]).reshape(n, -1)

    def minmax(x):
        lo = x.min(dim=1, keepdim=True).values
        span = x.max(dim=1, keepdim=True).values - lo
        return torch.where(span > 0, (x - lo) / span.masked_fill(span == 0, 1), torch.zeros_like(x))

    magnitude = _clamp_ranks_by_sort(tvs.abs(), 1e-4, 1e-4)
    clipped = torch.sign(tvs) * magnitude
    intra = torch.exp(n * minmax(magnitude) ** 2)
    inter = torch.tanh(tvs * tvs.sum(0, keepdim=True))
    scores = minmax(_clamp_ranks_by_sort(intra * inter, 1 - ratio, 0.0))
    w = torch.tensor(weights, dtype=base.dtype).reshape(n, 1)
    merged = (clipped * scores * w).sum(0) / scores.sum(0).clamp_min(1e-12)
    return (base.reshape(-1) + lambda_ * merged).reshape(base.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pcb_is_its_formula_to_the_bit(dtype):
    """The in-place PCB gives the bits of the out-of-place formula: random and tied task vectors, an expert
    equal to the base (a constant row), a zero tensor entry, unequal weights."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 37, generator=g, dtype=dtype)
    experts = [base + torch.randn(base.shape, generator=g, dtype=dtype) * 0.01,
               base + (torch.randn(base.shape, generator=g) * 0.01).bfloat16().to(dtype),  # ties
               base.clone()]  # τ = 0: a constant row
    experts[0][0, :5] = base[0, :5]
    for ratio, weights, lambda_ in [(0.1, (1.0, 1.0, 1.0), 1.0), (0.5, (0.3, 1.2, 0.5), 0.7), (1.0, (1.0, 2.0, 1.0), 1.0)]:
        got = merge("pcb", base, experts, {"ratio": ratio, "lambda": lambda_}, weights)
        want = _pcb_by_the_formula(base, experts, ratio, weights, lambda_)
        assert torch.equal(got.view(torch.int64 if dtype == torch.float64 else torch.int32),
                           want.view(torch.int64 if dtype == torch.float64 else torch.int32)), (ratio, weights)


def test_pcb_scores_and_merge_by_hand():
    # τ1 = [0.4, -0.2, 0.1, 0], τ2 = [0.2, 0.3, -0.1, 0]; d = 4 < 10^4, so the outlier clip caps each
    # |τ_i| at its 2nd largest value (rank int(4·(1−1e-4))−1 = 2): τ̂1 = [0.2, -0.2, 0.1, 0], τ̂2 = [0.2, 0.2, -0.1, 0].
    tvs = torch.stack([T(0.4, -0.2, 0.1, 0.0), T(0.2, 0.3, -0.1, 0.0)])
    clipped, scores = pcb_scores(tvs, 0.75)
    assert_close(clipped, torch.stack([T(0.2, -0.2, 0.1, 0.0), T(0.2, 0.2, -0.1, 0.0)]))
    # intra = exp(2·minmax(|τ̂|)²) = [e², e², e^0.5, 1] for both; Στ = [0.6, 0.1, 0, 0]
    # inter: tanh(τ1·Στ) = [tanh .24, -tanh .02, 0, 0], tanh(τ2·Στ) = [tanh .12, tanh .03, 0, 0]
    # drop (ratio 0.75): clamp at the rank int(4·0.25) = 1 value, then min-max per row:
    #   β1 = e²·[tanh .24, -tanh .02, 0, 0] -> floor 0 -> [1, 0, 0, 0]
    #   β2 = e²·[tanh .12, tanh .03, 0, 0]  -> floor 0 -> [1, tanh .03 / tanh .12, 0, 0]
    r = math.tanh(0.03) / math.tanh(0.12)
    assert_close(scores, torch.stack([T(1, 0, 0, 0), T(1, r, 0, 0)]))
    base = torch.zeros(4, dtype=D)  # θ_0 = 0 keeps τ exact (Στ at entry 2 is exactly 0)
    experts = [t.clone() for t in tvs]
    # Σ w τ̂ β / Σ β with w = (1, 2): entry 0 (0.2 + 0.4)/2 = 0.3; entry 1 (2·0.2·r)/r = 0.4; others 0
    out = merge("pcb", base, experts, {"ratio": 0.75, "lambda": 0.5}, weights=(1.0, 2.0))
    assert_close(out, T(0.15, 0.2, 0.0, 0.0))
    # ratio 0.5 keeps only what is strictly above the rank-2 value: the top entry of each row
    assert_close(merge("pcb", base, experts, {"ratio": 0.5}), T(0.2, 0.0, 0.0, 0.0))


def test_pcb_defaults_are_the_papers():
    config = get("pcb").make_config({})
    assert config.ratio == 0.1 and config.lambda_ == 1.0


# -- DAREx-q ------------------------------------------------------------------------------------------
def test_phi_is_continuous_at_one_half():
    assert phi(0.5) == 0.5
    assert abs(phi(0.5 + 1e-6) - 0.5) < 1e-5
    assert_close(torch.tensor(phi(0.9)), torch.tensor(-0.8 / math.log(1 / 9)))


def test_analytical_q_by_hand():
    # p = 0.5, φ = 1/2, η = 0.45: f(q) = |η(1 − 0.5/q)·S1 + η²·φ·S2/(4q²) + log 40|
    # row [1, 1]: S1 = 2, S2 = 2: f = 0.9 − 0.45/q + 0.050625/q² + log 40, increasing for q > 0.225 -> q = 0.5
    # row [-1, -1]: S1 = -2: f = −0.9 + 0.45/q + 0.050625/q² + log 40, decreasing -> q = 0.999
    assert analytical_q(T(1, 1), 0.5) == pytest.approx(0.5)
    assert analytical_q(T(-1, -1), 0.5) == pytest.approx(0.999)
    assert analytical_q(torch.stack([T(1, 1), T(-1, -1)]), 0.5) == pytest.approx((0.5 + 0.999) / 2)
    # an activation x̄ = [-1, -1] flips the sign of c = τ ⊙ x̄
    assert analytical_q(T(1, 1), 0.5, activation=T(-1, -1)) == pytest.approx(0.999)
    # p = 0.9, row [1, 1]: f = const − A/q + B/q² with A = η·S1·(1−p) = 0.09, B = η²·φ(0.9)·S2/4;
    # f' = 0 at q = 2B/A (inside the grid [0.1, 0.999]; f stays positive there)
    b = 0.45**2 * phi(0.9) * 2 / 4
    assert analytical_q(T(1, 1), 0.9) == pytest.approx(round(2 * b / 0.09, 3))


def test_darex_fixed_q_is_dare_masks_rescaled_by_one_over_q():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 30, generator=g, dtype=D)
    experts = [base + torch.randn(40, 30, generator=g, dtype=D) for _ in range(2)]
    dropped = merge("dare_linear", base, experts, {"density": 0.1, "rescale": False}) - base  # Σ m_i ⊙ τ_i
    out = merge("darex_q", base, experts, {"density": 0.1, "q": 0.25, "lambda": 0.5})
    assert_close(out, base + 0.5 * dropped / 0.25)
    # q = 1 − p is DARE exactly
    assert_close(merge("darex_q", base, experts, {"density": 0.1, "q": 0.1}),
                 merge("dare_linear", base, experts, {"density": 0.1}))


def test_darex_analytical_q_per_tensor():
    # one expert, τ = +1 everywhere in a 1-row tensor: S1 > 0 for every row -> q = 1 − p (DARE's rescale)
    base = torch.zeros(1, 50, dtype=D)
    expert = base + 1.0
    out = merge("darex_q", base, [expert], {"density": 0.5})
    kept = out != 0
    assert_close(out[kept], torch.full((int(kept.sum()),), 2.0, dtype=D))  # 1 / q = 1 / 0.5
    # τ = −0.01: S1 = −0.5, f = −0.225 + 0.1125/q + (tiny)/q² + log 40 > 0 and decreasing -> q = 0.999,
    # survivors ≈ −0.01001 instead of DARE's −0.02
    out = merge("darex_q", base, [base - 0.01], {"density": 0.5})
    assert_close(out[out != 0], torch.full((int((out != 0).sum()),), -0.01 / 0.999, dtype=D))


def test_darex_full_density_is_task_arithmetic():
    base = torch.zeros(3, dtype=D)
    out = merge("darex_q", base, [T(1, 2, 3), T(1, 0, 0)], {"density": 1.0})
    assert_close(out, T(2, 2, 3))
