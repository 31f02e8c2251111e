"""Exact top-m selection (hf_time.merges.selection) against a sort-based reference.

The reference ranks entries by a stable descending sort in float64 (exact for every float dtype), so
ties come out in index order, which is the rule the merges follow. Every selection path is checked:
on CPU numpy's partition and numpy's sampled bracket (hit and missed), and the bit-pattern
selections of hf_time.merges.bitselect that other devices run: the bracket over one whole-tensor
chunk and over many odd-sized chunks, missed with the radix fallback, and the radix select alone
with histograms down to the last 16 bits.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from hf_time.merges import bitselect, selection

DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)


PATHS = {  # module settings per path: NUMPY_* of hf_time.merges.selection, the others of bitselect
    "partition": dict(NUMPY_ON_CPU=True),  # the CPU default for small tensors
    "numpy_bracket": dict(NUMPY_ON_CPU=True, NUMPY_BRACKET_FROM=0, CPU_CHUNK=97),  # the CPU default for large ones
    "numpy_bracket_missed": dict(NUMPY_ON_CPU=True, NUMPY_BRACKET_FROM=0, CPU_CHUNK=97, MARGIN=0.0),
    # mid-size tensors: the bracket only when its sample sits in a run of ties, else the partition
    "numpy_tied": dict(NUMPY_ON_CPU=True, NUMPY_TIED_FROM=0, NUMPY_BRACKET_FROM=1 << 62, CPU_CHUNK=97),
    # what an accelerator runs: one chunk, a sampled bracket over bit keys, the last keys sorted
    "bracket_whole": dict(NUMPY_ON_CPU=False, CPU_CHUNK=1 << 40),
    # chunks of an odd size, so that chunk boundaries fall inside runs of ties
    "bracket_chunked": dict(NUMPY_ON_CPU=False, CPU_CHUNK=97),
    # a bracket without margin: it often misses and the radix fallback runs
    "bracket_missed": dict(NUMPY_ON_CPU=False, CPU_CHUNK=97, MARGIN=0.0),
    # radix only, histograms down to the last 16 bits instead of a sort of the last keys
    "radix_chunked": dict(NUMPY_ON_CPU=False, CPU_CHUNK=97, SAMPLE=0, SORT_BELOW=16),
}


def _force(monkeypatch, name: str) -> None:
    for setting, value in PATHS[name].items():
        monkeypatch.setattr(selection if setting.startswith("NUMPY") else bitselect, setting, value)


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    """Every selection path."""
    _force(monkeypatch, request.param)
    return request.param


@pytest.fixture(params=["partition", "numpy_bracket", "bracket_whole", "bracket_chunked"])
def mask_path(request, monkeypatch):
    """The paths that differ in how masks are written (whole tensor or chunks); the selections
    themselves are checked on every path by test_thresholds_match_a_sort_for_every_m."""
    _force(monkeypatch, request.param)
    return request.param


def _inputs(kind: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(n * 31 + len(kind))
    if kind == "random":
        x = torch.randn(n, generator=g, dtype=torch.float64)
    elif kind == "tied":  # a task vector of bf16 checkpoints: few distinct values, many equal
        base = (torch.randn(n, generator=g) * 0.02).bfloat16()
        x = (base.float() + torch.randn(n, generator=g) * 0.004).bfloat16().double() - base.double()
    elif kind == "bf16_exact":
        x = torch.randn(n, generator=g).bfloat16().double()
    elif kind == "equal":
        x = torch.full((n,), -0.375, dtype=torch.float64)
    elif kind == "zeros":
        x = torch.zeros(n, dtype=torch.float64)
    elif kind == "negative_zero":  # -0.0 and +0.0 must rank as equal (and tie in index order)
        signs = torch.rand(n, generator=g) < 0.5
        x = torch.where(signs, -0.0, 0.0).double()
        x[torch.rand(n, generator=g) < 0.2] = 1.5
        x[torch.rand(n, generator=g) < 0.2] = -2.0
    elif kind == "sparse":  # the task vector of a merged expert: mostly exact zeros (±0.0), then random values
        x = torch.randn(n, generator=g, dtype=torch.float64)
        x[torch.rand(n, generator=g) < 0.8] = 0.0
        x[torch.rand(n, generator=g) < 0.1] = -0.0
    elif kind == "extremes":
        pool = torch.tensor([float("inf"), -float("inf"), 1e-40, -1e-40, 0.0, -0.0, 3.0, -3.0], dtype=torch.float64)
        x = pool[torch.randint(0, len(pool), (n,), generator=g)]
    else:
        raise ValueError(kind)
    return x.to(dtype)


def _reference(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries ranked by a stable descending sort in float64 (exact): (values, indices), ties in index order."""
    order = torch.sort(values.reshape(-1).double(), descending=True, stable=True)
    return order.values, order.indices


def _top(indices: torch.Tensor, m: int, shape) -> torch.Tensor:
    mask = torch.zeros(indices.numel(), dtype=torch.bool)
    mask[indices[:m]] = True
    return mask.view(shape)


KINDS = ("random", "tied", "bf16_exact", "equal", "zeros", "negative_zero", "sparse", "extremes")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 64, 500])
def test_thresholds_match_a_sort_for_every_m(path, kind, n, dtype):
    x = _inputs(kind, n, dtype)
    before = x.clone()
    ms = list(range(n + 1)) if n < 100 else list(range(12)) + list(range(12, n - 12, 29)) + list(range(n - 12, n + 1))
    for absolute in (False, True):
        values = x.abs() if absolute else x
        ranked, _ = _reference(values)
        flat = values.double()
        for m, th in zip(ms, selection.thresholds(x, ms, absolute=absolute)):
            value = float(ranked[m - 1]) if m else float("inf")
            assert th.m == m and th.value == value, (m, absolute)
            if m:  # m == 0 keeps nothing: value inf, counts 0 (even if an entry is +inf)
                assert th.greater == int((flat > value).sum()) and th.equal == int((flat == value).sum()), (m, absolute)
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8))  # input untouched, bit for bit


@pytest.mark.parametrize("dtype", DTYPES[:3], ids=str)  # float16 shares bfloat16's 16-bit path
@pytest.mark.parametrize("kind", KINDS)
def test_top_mask_matches_a_sort(mask_path, kind, dtype):
    n = 300
    x = _inputs(kind, n, dtype).view(20, 15)
    for absolute in (False, True):
        ranked, order = _reference(x.abs() if absolute else x)
        for m in (0, 1, 2, 3, 41, n // 2, 223, n - 2, n - 1, n):
            got = selection.top_mask(x, m, absolute=absolute)
            assert got.shape == x.shape and torch.equal(got, _top(order, m, x.shape)), (m, absolute)
            if not absolute:
                assert selection.kth_largest(x, m) == (float(ranked[m - 1]) if m else float("inf"))


@pytest.mark.parametrize("dtype", DTYPES[:3], ids=str)
@pytest.mark.parametrize("kind", ["random", "tied", "equal", "zeros", "negative_zero", "sparse"])
def test_keep_magnitude_ranks_is_the_old_bool_mask_product(mask_path, kind, dtype):
    n = 257
    x = _inputs(kind, n, dtype)
    _, order = _reference(x.abs())
    for start, stop in [(0, 0), (0, 77), (0, n), (1, 2), (5, 130), (40, n), (0, n - 1)]:
        keep = _top(order, stop, x.shape) & ~_top(order, start, x.shape)
        tv = x.clone()
        assert selection.keep_magnitude_ranks_(tv, start, stop) is tv
        expected = x * keep  # what the kernels did before: multiply by a bool mask
        # equal values (no NaN here): the same bits but for the sign of dropped zeros (MagnitudeTrim's docstring)
        assert torch.equal(tv, expected), (start, stop)


def test_keep_magnitude_ranks_on_a_non_contiguous_view(mask_path):
    x = _inputs("tied", 400, torch.float32).view(20, 20)
    tv = x.clone().t()
    selection.keep_magnitude_ranks_(tv, 3, 150)
    flat = x.t().reshape(-1)
    _, order = _reference(flat.abs())
    keep = _top(order, 150, flat.shape) & ~_top(order, 3, flat.shape)
    assert torch.equal(tv.reshape(-1), flat * keep)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["partition", "numpy_bracket", "bracket_whole", "radix_chunked"])
def test_large_tied_input_across_many_chunks(monkeypatch, dtype, name):
    # the full-size sample and 16-bit histograms at work; runs of ties span chunk boundaries
    _force(monkeypatch, name)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 16411)
    monkeypatch.setattr(bitselect, "SORT_BELOW", 2048)
    n = 150_001
    x = _inputs("tied", n, dtype)
    ranked, order = _reference(x.abs())
    for m in (1, n // 1000, n // 5, n // 2, n - 3, n):
        (th,) = selection.thresholds(x, [m], absolute=True)
        assert th.value == float(ranked[m - 1])
        assert torch.equal(selection.top_mask(x, m, absolute=True), _top(order, m, x.shape)), m


def test_zero_and_full_counts():
    x = torch.tensor([0.5, -1.0, 2.0])
    assert selection.kth_largest(x, 0) == float("inf")
    assert selection.top_mask(x, 0).sum() == 0 and selection.top_mask(x, 3).all()
    assert selection.top_mask(x, 7).all()  # counts are clamped to numel
    assert selection.thresholds(torch.zeros(0), [0]) == (selection.Threshold(0, float("inf"), 0, 0),)


@pytest.mark.parametrize("chunk", [1 << 40, 97])
def test_keep_magnitude_between_is_the_old_bool_mask_product(monkeypatch, chunk):
    monkeypatch.setattr(bitselect, "CPU_CHUNK", chunk)
    x = torch.cat([_inputs("tied", 500, torch.float32), _inputs("extremes", 100, torch.float32)])
    mags = x.abs()
    for lo, hi in [(0.0, None), (0.004, None), (0.002, 0.006), (0.0, float("inf")), (1e-40, 3.0), (5.0, None)]:
        keep = mags >= lo if hi is None else (mags >= lo) & (mags < hi)
        out = selection.keep_magnitude_between_(x.clone(), lo, hi)
        if hi is None:  # one hardshrink pass: the same values, and every dropped entry is +0.0
            assert torch.equal(out, x * keep) and not torch.signbit(out[~keep]).any(), (lo, hi)
        else:  # a band: the float-mask product to the bit (-0.0, and inf * 0 = nan, included)
            assert torch.equal(out.view(torch.int32), (x * keep).view(torch.int32)), (lo, hi)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_float_below_is_the_largest_number_of_the_dtype_below_a_value(dtype):
    """``|x| > _float_below(v)`` is ``|x| >= v`` for x of the dtype, whether v is a number of it or lies between
    two (rounded up or down to the nearest), and at the ends (0, the largest finite number, inf)."""
    finfo = torch.finfo(dtype)
    for v in (1.0, 0.1, 0.3, 1e-30, 3e-39, float(finfo.max), 1e300, math.inf, 0.0, -2.0):
        below = selection._float_below(v, dtype)
        if v <= 0:
            assert below == -1.0
            continue
        b = torch.tensor(below, dtype=dtype)
        assert float(b) == below and below < v  # a number of the dtype, below v...
        assert float(torch.nextafter(b, torch.tensor(math.inf, dtype=dtype))) >= v  # ...and the next one is not


@pytest.mark.parametrize("tied_from,bracket_from", [(0, 1 << 62), (1 << 62, 0)])
def test_a_bracket_inside_a_run_of_ties_is_counted_not_partitioned(monkeypatch, tied_from, bracket_from):
    g = torch.Generator().manual_seed(7)
    values = torch.randn(50_000, generator=g).bfloat16()  # a 16-bit tensor: runs of ties are expected
    values[torch.randperm(50_000, generator=g)[:30_000]] = 0.5  # 60% of the entries tie
    expected = selection._partition_select(values, [25_000, 49_000], absolute=False)
    monkeypatch.setattr(selection, "NUMPY_TIED_FROM", tied_from)
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", bracket_from)
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 4099)
    partitioned = []
    real = selection._partition_select
    monkeypatch.setattr(selection, "_partition_select", lambda *a: partitioned.append(a[1]) or real(*a))
    tied = selection.thresholds(values, [25_000])
    assert tied == (expected[0],) and tied[0].value == 0.5 and tied[0].equal >= 30_000
    assert partitioned == []  # counted in one pass
    # not in a run of ties: mid-size tensors go to the partition, large ones to the bracket
    assert selection.thresholds(values, [49_000]) == (expected[1],)
    assert partitioned == ([[49_000]] if tied_from == 0 else [])
    # a band with one end in a run of ties (Breadcrumbs: the top-gamma end is not): both ends in the one
    # counting pass, the untied end's few entries copied out, never a partition of the whole tensor
    partitioned.clear()
    assert selection.thresholds(values, [25_000, 49_000]) == tuple(expected)
    assert partitioned == []


def _parts(pieces):
    """Parts over (values, minus) pairs, counting how often each is opened; ``values`` may be a list (one
    piece per ranked tensor, for thresholds_of_parts_each)."""
    import contextlib

    opened = []

    def opener(k):
        @contextlib.contextmanager
        def open_piece():
            opened.append(k)
            yield pieces[k]
        return open_piece

    return [selection.Part((v[0] if isinstance(v, list) else v).numel(), opener(k))
            for k, (v, _) in enumerate(pieces)], opened


@pytest.mark.parametrize("path_name", ["partition", "numpy_bracket", "numpy_bracket_missed"])
@pytest.mark.parametrize("kind", ["random", "tied", "zeros", "negative_zero"])
def test_thresholds_of_parts_are_those_of_the_concatenation(monkeypatch, path_name, kind):
    """Ranked piece by piece (a global threshold over a model's tensors) or concatenated: same thresholds."""
    _force(monkeypatch, path_name)
    monkeypatch.setattr(bitselect, "SAMPLE", 64)
    g = torch.Generator().manual_seed(len(kind))
    pieces = []
    for k, n in enumerate((1, 700, 33, 2048, 5)):  # odd sizes: samples and chunks straddle pieces
        minus = (torch.randn(n, generator=g) * 0.02).bfloat16()
        values = (minus.float() + _inputs(kind, n, torch.float32) * 0.004).bfloat16()
        pieces.append((values, minus) if k % 2 == 0 else (values.float(), minus))  # mixed dtypes, as real models
    whole = torch.cat([(v.float() - m.float()).reshape(-1) for v, m in pieces])
    ranked, _ = _reference(whole.abs())
    n = whole.numel()
    ms = [0, 1, 2, 17, n // 3, n // 2, n - 5, n]
    parts, opened = _parts(pieces)
    got = selection.thresholds_of_parts(parts, ms, absolute=True)
    for m, th in zip(ms, got):
        value = float(ranked[m - 1]) if m else float("inf")
        assert th.m == m and th.value == value, m
        if m:
            assert th.greater == int((whole.abs() > value).sum()) and th.equal == int((whole.abs() == value).sum())
    if path_name == "numpy_bracket":  # proven by the bracket: each piece opened at most twice, never concatenated
        assert all(opened.count(k) <= 2 for k in range(len(pieces)))


@pytest.mark.parametrize("path_name", ["partition", "numpy_bracket", "numpy_bracket_missed"])
def test_thresholds_of_parts_each_are_those_of_each_tensor_alone(monkeypatch, path_name):
    """Global thresholds of several experts ranked in the same passes over the pieces (θ_0 read once for all)
    equal one thresholds_of_parts call per expert; a proven bracket opens each piece twice, not twice per expert."""
    import contextlib

    _force(monkeypatch, path_name)
    monkeypatch.setattr(bitselect, "SAMPLE", 64)
    g = torch.Generator().manual_seed(11)
    kinds = ("random", "tied", "zeros")
    pieces = []  # (values of each expert, minus): mixed dtypes across pieces and experts, as real models
    for k, n in enumerate((1, 700, 33, 2048, 5)):
        minus = (torch.randn(n, generator=g) * 0.02).bfloat16()
        experts = [(minus.float() + _inputs(kind, n, torch.float32) * 0.004).bfloat16() for kind in kinds]
        pieces.append(([e if (k + j) % 2 else e.float() for j, e in enumerate(experts)], minus))
    n = sum(v[0].numel() for v, _ in pieces)
    ms = [[0, 1, n // 3, n], [], [17, n // 2, n - 5]]  # the second expert wants nothing
    parts, opened = _parts(pieces)
    got = selection.thresholds_of_parts_each(parts, ms, absolute=True)
    if path_name == "numpy_bracket":
        assert all(opened.count(k) <= 2 for k in range(len(pieces))) and opened.count(3) == 2  # not per expert
    for j, wanted in enumerate(ms):
        alone = selection.thresholds_of_parts(
            [selection.Part(v[j].numel(), functools.partial(contextlib.nullcontext, (v[j], m))) for v, m in pieces],
            wanted, absolute=True)
        assert got[j] == alone
        whole = torch.cat([(v[j].float() - m.float()).abs() for v, m in pieces])
        ranked, _ = _reference(whole)
        assert [th.value for th in got[j]] == [float(ranked[m - 1]) if m else math.inf for m in wanted]


def test_a_proven_bracket_over_parts_never_concatenates(monkeypatch):
    _force(monkeypatch, "numpy_bracket")
    g = torch.Generator().manual_seed(7)
    pieces = [(torch.randn(n, generator=g), torch.randn(n, generator=g)) for n in (4000, 3000, 999)]
    ranked, _ = _reference(torch.cat([(v - m).abs() for v, m in pieces]))

    def refuse(*args, **kwargs):
        raise AssertionError("the parts were concatenated")

    monkeypatch.setattr(selection.torch, "cat", refuse)
    parts, opened = _parts(pieces)
    (th,) = selection.thresholds_of_parts(parts, [2000], absolute=True)
    assert th.value == float(ranked[1999])
    assert sorted(opened) == [0, 0, 1, 1, 2, 2]  # a sample, then one counting pass, piece by piece


def test_magnitudes_that_are_mostly_zero_are_ranked_without_the_zeros(monkeypatch):
    # numpy's partition slows down 5-30x when it selects next to a mass of equal values: the zeros are set aside
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4000, generator=g)
    x[torch.rand(4000, generator=g) < 0.8] = 0.0
    nonzero = int(torch.count_nonzero(x))
    sizes = []
    largest = selection._largest

    def spy(arr, ms, *, nonnegative):
        sizes.append(arr.size)
        return largest(arr, ms, nonnegative=nonnegative)

    monkeypatch.setattr(selection, "_largest", spy)
    ranked = torch.sort(x.abs().double(), descending=True).values
    ms = [1, nonzero // 2, nonzero, nonzero + 1, 4000]
    for m, th in zip(ms, selection.thresholds(x, ms, absolute=True)):
        value = float(ranked[m - 1])
        assert (th.value, th.greater, th.equal) == (value, int((ranked > value).sum()), int((ranked == value).sum()))
    assert sizes == [4000, nonzero]  # the partition saw the non-zero magnitudes only
    sizes.clear()
    top = torch.sort(x.abs().double(), descending=True).values[9].item()
    assert selection.thresholds(x, [10], absolute=True)[0].value == top
    assert sizes == [4000]  # far from the zeros the partition runs as it is (setting them aside costs a copy)
    assert selection.thresholds(x, [nonzero + 1], absolute=True)[0] == selection.Threshold(nonzero + 1, 0.0, nonzero,
                                                                                              4000 - nonzero)


def test_counts_of_float_masks_stay_exact_beyond_float32_integers():
    """A float32 holds every whole number only up to 2**24; a longer mask (one chunk on an accelerator) is
    summed in float64 so its count stays exact."""
    n = (1 << 24) + 3
    assert selection._count(torch.ones(n)) == n
    assert selection._count(torch.zeros(n).index_fill_(0, torch.tensor([0, n - 1]), 1.0)) == 2


@pytest.mark.parametrize("n,expected", [(10, 1), (1000, 62), (1 << 18, 1 << 14), (1 << 20, 1 << 14),
                                        (1 << 21, 1 << 15), (1 << 22, 1 << 16), (1 << 30, 1 << 16)])
def test_the_sample_is_one_entry_in_64_between_its_floor_and_cap(n, expected):
    where = bitselect.sample_positions(n)
    assert where.size == expected
    assert where[-1] < n  # the last sampled position is inside the tensor


def test_a_mid_size_bf16_task_vector_is_counted_inside_its_run_of_ties(monkeypatch):
    """The smallest sample (SAMPLE_FLOOR entries) still brackets the median of a 2^18-entry bf16 task vector
    inside its run of tied magnitudes (a fifth of the entries, as in bf16 finetunes), so it is counted, not
    partitioned; with half as many samples this one is partitioned."""
    g = torch.Generator().manual_seed(3)
    n = 1 << 18
    base = (torch.randn(n, generator=g) * 0.02).bfloat16()
    expert = (base.float() + torch.randn(n, generator=g) * 2e-4).bfloat16()
    tv = expert.float() - base.float()
    partitioned = []
    real = selection._partition_select
    monkeypatch.setattr(selection, "_partition_select", lambda *a: partitioned.append(a[1]) or real(*a))
    (got,) = selection.thresholds(expert, [n // 2], absolute=True, minus=base)
    assert partitioned == []
    assert got == selection._partition_select(tv, [n // 2], True)[0]


@pytest.mark.parametrize("path_name", ["partition", "numpy_bracket", "numpy_bracket_missed", "numpy_tied",
                                       "bracket_chunked"])
def test_thresholds_each_are_those_of_one_call_per_tensor(monkeypatch, path_name):
    """The experts of one tensor ranked together (one pass, θ_0 shared) get each the thresholds of its own
    call: bf16 and float32 experts beside each other, one tied and one not, several counts each."""
    _force(monkeypatch, path_name)
    g = torch.Generator().manual_seed(11)
    n = 5000
    base = (torch.randn(n, generator=g) * 0.02).bfloat16()
    experts = [
        (base.float() + torch.randn(n, generator=g) * 2e-4).bfloat16(),  # bf16 finetune: long runs of ties
        base.float() + torch.randn(n, generator=g) * 1e-3,  # a float32 expert of a bf16 base
        (base.float() + _inputs("sparse", n, torch.float32) * 1e-3).bfloat16(),  # mostly equal to the base
        base.clone(),  # a task vector of zeros
    ]
    ms = [[n // 2, n // 5], [n // 2], [0, 1, n // 10], [n // 3, n]]
    got = selection.thresholds_each(experts, ms, absolute=True, minus=base)
    assert got == [selection.thresholds(e, m, absolute=True, minus=base) for e, m in zip(experts, ms)]
    for e, m, found in zip(experts, ms, got):  # and the reference of each
        ranked, _ = _reference((e.double() - base.double()).abs())
        assert [th.value for th in found] == [float(ranked[k - 1]) if k else float("inf") for k in m]
    trims = selection.MagnitudeTrim.ranks_each(experts, [(0, n // 2), (n // 10, n // 2), (0, n), (0, n // 3)],
                                               minus=base)
    assert trims[2] is None  # everything kept
    assert trims[1]._skip == selection.thresholds(experts[1], [n // 10], absolute=True, minus=base)[0]
    assert trims[3]._top == got[3][0]


def test_thresholds_each_refuses_tensors_of_other_sizes():
    with pytest.raises(ValueError, match="one size"):
        selection.thresholds_each([torch.zeros(3), torch.zeros(4)], [[1], [1]])
    with pytest.raises(ValueError, match="one size"):
        selection.thresholds_each([torch.zeros(3)], [[1]], minus=torch.zeros(4))
    with pytest.raises(TypeError, match="floating"):
        selection.thresholds_each([torch.zeros(3), torch.zeros(3, dtype=torch.int32)], [[1], [1]])
    assert selection.thresholds_each([], [], minus=torch.zeros(3)) == []


def test_experts_ranked_together_share_one_pass_range_by_range(monkeypatch):
    """What makes ranking the experts together faster: one counting pass walks the ranges once, every expert's
    chunk of a range in turn, so each range of θ_0 is read (and widened) once for all of them."""
    _force(monkeypatch, "numpy_bracket")
    monkeypatch.setattr(bitselect, "CPU_CHUNK", 1000)
    g = torch.Generator().manual_seed(5)
    base = torch.randn(10_000, generator=g).bfloat16()
    experts = [(base.float() + torch.randn(10_000, generator=g) * 0.01).bfloat16() for _ in range(3)]
    widened = []
    real = selection._Ranked.chunks

    def counting(self, absolute, which):
        for j, chunk in real(self, absolute, which):
            widened.append(j)
            yield j, chunk

    monkeypatch.setattr(selection._Ranked, "chunks", counting)
    selection.thresholds_each(experts, [[5000]] * 3, absolute=True, minus=base)
    assert widened == [0, 1, 2] * 10  # range by range, every expert, in one pass


@pytest.mark.parametrize("chunk", [97, 1 << 18])
def test_the_cut_of_a_tied_threshold_is_just_after_its_last_kept_tie(monkeypatch, chunk):
    """The counting pass of a tied bracket gives each threshold its cut (the index just after the last kept tie,
    found in the chunk that holds it); a top-m trim then keeps ``|x| >= t`` before it and ``|x| > t`` from it."""
    _force(monkeypatch, "numpy_bracket")
    monkeypatch.setattr(bitselect, "CPU_CHUNK", chunk)
    g = torch.Generator().manual_seed(4)
    base = torch.randn(512 * 515, generator=g).bfloat16()
    expert = (base.float() + 0.01 * torch.randn(base.shape, generator=g)).bfloat16()
    tau = expert.double() - base.double()
    m = tau.numel() // 2
    (th,) = selection.thresholds(expert, [m], absolute=True, minus=base)
    ranked, order = _reference(tau.abs())
    assert th.value == float(ranked[m - 1]) and 0 < th.ties_kept < th.equal  # some ties kept, some dropped
    tied_at = torch.nonzero(tau.abs() == th.value)[:, 0]
    assert th.cut == int(tied_at[th.ties_kept - 1]) + 1
    trim = selection.MagnitudeTrim.ranks(expert, 0, m, minus=base)
    assert trim._shrink == (th.cut, th.value)
    out = selection.apply_trim_(tau.float(), trim)
    assert torch.equal(out != 0, _top(order, m, tau.shape) & (tau != 0))  # exactly the m largest, ties by index
    # the partition finds no cut: its trims count ties slice by slice, with the same result
    monkeypatch.setattr(selection, "NUMPY_BRACKET_FROM", 1 << 62)
    monkeypatch.setattr(selection, "NUMPY_TIED_FROM", 1 << 62)
    assert selection.thresholds(expert, [m], absolute=True, minus=base)[0].cut is None
    assert torch.equal(selection.apply_trim_(tau.float(), selection.MagnitudeTrim.ranks(expert, 0, m, minus=base)), out)


def test_a_part_of_the_sample_is_enough_inside_a_run_of_ties(monkeypatch):
    """A large sample is gathered in two steps: SAMPLE_FLOOR entries first, and the rest only for the tensors
    whose brackets that part leaves outside a run of ties (here the float32 expert, with no ties)."""
    g = torch.Generator().manual_seed(4)
    n = selection.NUMPY_BRACKET_FROM  # 2^22 entries: the sampled bracket, a sample of 65536
    base = torch.randn(n, generator=g).bfloat16()
    experts = [(base.float() + 0.01 * torch.randn(n, generator=g)).bfloat16(),  # long runs of ties
               base.float() + 0.01 * torch.randn(n, generator=g)]  # float32: no run of ties
    gathered = []
    real = selection._Ranked.samples
    monkeypatch.setattr(selection._Ranked, "samples", lambda self, at, which: gathered.append((at.size, list(which)))
                        or real(self, at, which))
    m = n // 2
    got = selection.thresholds_each(experts, [[m], [m]], absolute=True, minus=base)
    assert gathered == [(bitselect.SAMPLE_FLOOR, [0, 1]), (bitselect.SAMPLE, [1])]
    for e, (th,) in zip(experts, got):
        tau = (e.float() - base.float()).abs()
        assert int((tau > th.value).sum()) < m <= int((tau >= th.value).sum())  # the m-th largest
