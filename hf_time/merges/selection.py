"""Exact top-m selection in linear time, by a radix select over the bit patterns of floats.

TIES, Breadcrumbs and the global thresholds keep exactly ``m = int(density * numel)`` entries of
largest magnitude, ties at the threshold taken in index order. Finding the m-th largest value by
``np.partition``/``torch.kthvalue`` and then counting the entries above it took most of a TIES merge;
here the threshold comes out of two histogram passes whose counts also say how many entries are
above it and tied with it, so the mask is then one more pass.

The bit trick: an IEEE float is sign | exponent | mantissa, so for non-negative floats the bit pattern
read as a signed integer of the same width is ordered exactly like the values (a larger exponent wins,
then a larger mantissa; +inf above every finite value). A negative float is mapped to minus its
magnitude's pattern, which keeps the order for any sign and sends -0.0 to the key of +0.0, so equal
floats get equal keys (NaNs are not supported: their keys sit beyond ±inf). The m-th largest key is
found 16 bits at a time: a histogram (``bincount``) of the top 16 bits of every key gives the bucket
holding it and how many entries lie in higher buckets; the keys of that one bucket (few, unless the
data is heavily tied) are pulled out and their next 16 bits histogrammed, and so on: 1 pass for
bf16/fp16, 2 for float32, 4 for float64, each O(n), with no sort and no data-dependent worst case.

On CPU the passes run over cache-sized chunks with reused buffers (a fresh full-size temporary costs
more in page faults than the arithmetic), and tensors below :data:`SMALL` use numpy's partition,
which is faster there (figures: ``benchmarks/select.md``). Elsewhere (CUDA) every pass is one
full-size torch op; nothing here is CPU-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

_DIGIT = 16
_BINS = 1 << _DIGIT
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}
CPU_CHUNK = 1 << 20  # elements per chunk on CPU: 4 MiB of float32 stays in a core's L2 between ops
SMALL = 1 << 17  # below this many entries numpy's partition beats the histogram passes on CPU
_SORT_BELOW = 2048  # the keys left in one bucket are sorted when fewer than this (fixed cost, O(1))


@dataclass(frozen=True)
class Threshold:
    """Where the ``m`` largest entries of a tensor end.

    Attributes:
        m: how many entries are kept.
        value: the m-th largest value (``inf`` when m == 0, with both counts 0: nothing is kept).
        greater: how many entries are strictly greater than ``value`` (all kept).
        equal: how many entries equal ``value``; the first ``m - greater`` of them in index order are kept.
    """

    m: int
    value: float
    greater: int
    equal: int

    @property
    def ties_kept(self) -> int:
        """How many entries equal to ``value`` are kept (the first ones in index order)."""
        return self.m - self.greater


def thresholds(values: Tensor, ms: Sequence[int], *, absolute: bool = False) -> tuple[Threshold, ...]:
    """The exact m-th largest value of ``values`` for each m, with the counts a top-m mask needs.

    Args:
        values: any floating tensor (not modified); its shape is ignored.
        ms: counts, each clamped to ``[0, numel]``; several share the first histogram pass.
        absolute: rank ``|values|`` instead of ``values`` (no ``abs()`` copy is made).
    Returns:
        One :class:`Threshold` per m, in order.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    ms = [min(max(int(m), 0), n) for m in ms]
    found = {m: Threshold(0, float("inf"), 0, 0) for m in ms if m == 0}
    wanted = sorted({m for m in ms if m > 0})
    if wanted:
        select = _partition_select if _use_partition(flat) else _radix_select
        found.update(zip(wanted, select(flat, wanted, absolute)))
    return tuple(found[m] for m in ms)


def kth_largest(values: Tensor, m: int) -> float:
    """The m-th largest entry of ``values`` (m >= 1), exactly; +inf when m == 0.

    Linear time (a radix select over the float bits, see the module docstring); the value is the
    one a sort would give, so thresholds stay bit-for-bit what they were with ``np.partition``.
    """
    return thresholds(values, [m])[0].value


def top_mask(values: Tensor, m: int, *, absolute: bool = False) -> Tensor:
    """A bool mask of exactly the ``m`` largest entries of ``values`` (or of ``|values|``), same shape.

    Entries tied with the m-th largest value are taken in index order until the count is met, so a
    ``density`` always keeps ``int(density * numel)`` entries. This matters for bf16 checkpoints: their
    task vectors take few distinct values, and at density 0.5 a fifth of the entries can sit exactly at
    the threshold (keeping all of them would keep ~65%). mergekit also keeps exactly m, breaking ties
    by its (unstable) sort order, so the two tools agree except on which tied entries are kept.
    """
    flat = values.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
    if m >= flat.numel() or m <= 0:
        return out.fill_(m > 0).view(values.shape)
    (th,) = thresholds(flat, [m], absolute=absolute)
    left = th.ties_kept
    for lo, hi in _chunks(flat):
        chunk = flat[lo:hi].abs() if absolute else flat[lo:hi]
        left = _fill_top(chunk, th, left, out[lo:hi])
    return out.view(values.shape)


def keep_magnitude_ranks_(tv: Tensor, start: int, stop: int) -> Tensor:
    """Zero, in place, every entry of ``tv`` whose magnitude rank is not in ``start+1 .. stop``.

    Ranks count from the largest ``|tv|`` (1) down, ties in index order, so exactly ``stop - start``
    entries survive: ``start=0`` is a top-``stop`` trim (TIES), ``start > 0`` a band (Breadcrumbs).
    ``tv`` must be a temporary the caller owns. Survivors are multiplied by 1.0 and the rest by 0.0,
    exactly as multiplying by a bool mask did (so a dropped negative entry becomes -0.0 as before).

    Args:
        tv: a contiguous task vector, modified in place.
        start: how many of the largest magnitudes are dropped (0 for a plain top-k).
        stop: rank of the last kept entry (``start <= stop``).
    Returns:
        ``tv``.
    """
    if not tv.is_contiguous():  # work on a contiguous copy so that chunks are plain slices
        return tv.copy_(keep_magnitude_ranks_(tv.contiguous(), start, stop))
    flat = tv.view(-1)
    n = flat.numel()
    start, stop = min(max(start, 0), n), min(max(stop, 0), n)
    if start == 0 and stop == n:
        return tv
    top, skip = thresholds(flat, [stop, start], absolute=True)
    left_top, left_skip = top.ties_kept, skip.ties_kept
    for lo, hi in _chunks(flat):
        chunk = flat[lo:hi]
        keep = torch.abs(chunk)  # a chunk-sized buffer, then 1.0/0.0 in place: float masks multiply fastest
        dropped = keep.clone() if start > 0 else None
        left_top = _fill_top(keep, top, left_top, keep)
        if dropped is not None:  # top(stop) contains top(start): their difference is the band
            left_skip = _fill_top(dropped, skip, left_skip, dropped)
            keep.sub_(dropped)
        chunk.mul_(keep)
    return tv


def _fill_top(chunk: Tensor, th: Threshold, left: int, out: Tensor) -> int:
    """Write the top-``th.m`` mask of one chunk (in index order after earlier chunks) into ``out``.

    ``left`` is how many tied entries are still to be kept; returns what is left after this chunk.
    ``out`` may be ``chunk`` itself (a float buffer): comparisons then write 1.0/0.0 in place.
    """
    t = th.value
    if left <= 0:
        return _cmp(torch.gt, chunk, t, out, 0)
    if left >= th.equal:  # every tie is kept: no position to find
        return _cmp(torch.ge, chunk, t, out, left)
    ties = torch.eq(chunk, t)
    count = int(torch.count_nonzero(ties))
    if count <= left:
        return _cmp(torch.ge, chunk, t, out, left - count)
    cut = int(ties.nonzero()[left - 1]) + 1  # just after the last tie that is kept
    torch.gt(chunk[cut:], t, out=out[cut:])
    torch.ge(chunk[:cut], t, out=out[:cut])
    return 0


def _cmp(op, chunk: Tensor, t: float, out: Tensor, left: int) -> int:
    op(chunk, t, out=out)
    return left


# -- the selection itself ---------------------------------------------------------------------------
def _use_partition(flat: Tensor) -> bool:
    return flat.device.type == "cpu" and flat.numel() < SMALL


def _partition_select(flat: Tensor, ms: Sequence[int], absolute: bool) -> list[Threshold]:
    """Small CPU tensors: numpy's introselect, then two counting compares (cheap at this size)."""
    vals = flat.abs() if absolute else flat
    n = vals.numel()
    arr = vals.float().numpy() if vals.dtype == torch.bfloat16 else vals.numpy()  # bf16 -> f32 is exact
    part = np.partition(arr, [n - m for m in ms])
    out = []
    for m in ms:
        t = float(part[n - m])
        out.append(Threshold(m, t, int(torch.count_nonzero(vals > t)), int(torch.count_nonzero(vals == t))))
    return out


def _radix_select(flat: Tensor, ms: Sequence[int], absolute: bool) -> list[Threshold]:
    """The exact m-th largest keys, 16 bits at a time (see the module docstring)."""
    width = torch.iinfo(_INT_VIEW[flat.dtype]).bits
    # Which key map: |x| (sign bit cleared), the raw bits (no sign bit set anywhere: the usual case of
    # magnitudes, checked with one cheap read-only reduction), or the signed map.
    signed = not absolute and bool(_int_bits(flat).min() < 0)
    mode = "abs" if absolute else ("signed" if signed else "raw")
    offset = _BINS // 2 if signed else 0  # signed top digits are -2^15..2^15-1: shift them to 0..2^16-1

    hist = None
    for _, digits in _top_digits(flat, mode, width, offset):
        counts = torch.bincount(digits, minlength=_BINS)
        hist = counts if hist is None else hist.add_(counts)
    picks = _pick(hist, ms)  # per m: (top digit, entries in higher buckets, rank in the bucket, bucket size)
    if width == _DIGIT:  # one pass: the top digit is the whole key
        return [_threshold(m, d - offset, above, equal, flat.dtype) for m, (d, above, _, equal) in zip(ms, picks)]

    members = _bucket_members(flat, mode, width, offset, sorted({p[0] for p in picks}))
    found: dict[tuple[int, int], tuple[int, int, int]] = {}
    for d, keys in members.items():  # the lower digits, on the members of each bucket only
        ranks = sorted({rank for digit, _, rank, _ in picks if digit == d})
        found.update(((d, r), f) for r, f in zip(ranks, _refine(keys, ranks, width - 2 * _DIGIT, d - offset)))
    out = []
    for m, (d, above, rank, _) in zip(ms, picks):
        key, greater, equal = found[d, rank]
        out.append(_threshold(m, key, above + greater, equal, flat.dtype))
    return out


def _refine(keys: Tensor, ranks: Sequence[int], shift: int, prefix: int) -> list[tuple[int, int, int]]:
    """Within keys sharing their digits above ``shift + 16`` (``prefix``, signed): for each rank, the
    exact key at that rank, how many of ``keys`` are greater, and how many equal it."""
    if keys.numel() <= _SORT_BELOW:  # a handful of keys: sorting them beats a 65536-bin histogram
        ranked = torch.sort(keys, descending=True).values
        at = ranked[torch.tensor(list(ranks), device=keys.device) - 1]
        counts = torch.stack([at, (keys > at[:, None]).sum(1), (keys == at[:, None]).sum(1)]).tolist()
        return list(zip(*counts))
    digits = (keys >> shift) & (_BINS - 1)
    picks = _pick(torch.bincount(digits, minlength=_BINS), ranks)
    if shift == 0:
        # two's complement: a signed high part followed by unsigned lower digits
        return [((prefix << _DIGIT) + d, above, equal) for d, above, _, equal in picks]
    out = {}
    for d in sorted({p[0] for p in picks}):
        group = [(r, rank) for r, (digit, _, rank, _) in zip(ranks, picks) if digit == d]
        sub = _refine(keys[digits == d], [rank for _, rank in group], shift - _DIGIT, (prefix << _DIGIT) + d)
        out.update({r: found for (r, _), found in zip(group, sub)})
    return [(out[r][0], above + out[r][1], out[r][2]) for r, (_, above, _, _) in zip(ranks, picks)]


def _pick(hist: Tensor, ranks: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """For each rank r (1 = largest): the digit holding it, how many entries have a larger digit, r's
    rank among the entries of its digit, and how many entries have that digit. One device sync."""
    above = hist.flip(0).cumsum(0)  # above[i]: entries whose digit is >= BINS-1-i
    r = torch.tensor(list(ranks), dtype=above.dtype, device=above.device)
    i = torch.searchsorted(above, r)  # the first digit (from the top) reaching rank r
    digit = _BINS - 1 - i
    count = hist[digit]
    rows = torch.stack([digit, above[i] - count, count]).tolist()
    return [(d, h, int(rank) - h, c) for d, h, c, rank in zip(*rows, ranks)]


def _threshold(m: int, key: int, greater: int, equal: int, dtype: torch.dtype) -> Threshold:
    """Back from a key to the float it stands for (a negative key is a negative float's magnitude)."""
    itype = _INT_VIEW[dtype]
    bits = key if key >= 0 else (-key) | int(torch.iinfo(itype).min)  # set the sign bit
    value = torch.tensor(bits, dtype=itype).view(dtype).item()
    return Threshold(m, value, greater, equal)


def _int_bits(t: Tensor) -> Tensor:
    return t.view(_INT_VIEW[t.dtype])


def _chunks(flat: Tensor) -> Iterator[tuple[int, int]]:
    """Index ranges covering ``flat``: cache-sized on CPU, the whole tensor on an accelerator."""
    n = flat.numel()
    step = CPU_CHUNK if flat.device.type == "cpu" else max(n, 1)
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


def _keys(chunk: Tensor, mode: str, buf: Tensor) -> Tensor:
    """Integer keys ordered like the chunk's values (or magnitudes); ``buf`` is scratch space."""
    bits = _int_bits(chunk)
    if mode == "raw":
        return bits
    mag = torch.bitwise_and(bits, torch.iinfo(bits.dtype).max, out=buf[: bits.numel()])  # clear the sign bit
    if mode == "abs":
        return mag
    return torch.where(bits < 0, -mag, mag)  # negative floats: minus their magnitude; -0.0 -> 0


def _top_digits(flat: Tensor, mode: str, width: int, offset: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(keys, top 16 bits of the keys as non-negative ints) for each chunk, in reused buffers."""
    itype = _INT_VIEW[flat.dtype]
    size = min(flat.numel(), CPU_CHUNK) if flat.device.type == "cpu" else flat.numel()
    key_buf = torch.empty(size, dtype=itype, device=flat.device)
    digit_buf = torch.empty(size, dtype=itype, device=flat.device)
    for lo, hi in _chunks(flat):
        keys = _keys(flat[lo:hi], mode, key_buf)
        digits = torch.bitwise_right_shift(keys, width - _DIGIT, out=digit_buf[: hi - lo])
        if offset:  # only signed keys: their top digit can be negative (and overflow int16)
            digits = digits.to(torch.int32).add_(offset)
        yield keys, digits


def _bucket_members(flat: Tensor, mode: str, width: int, offset: int, buckets: Sequence[int]) -> dict[int, Tensor]:
    """The keys whose top digit is one of ``buckets`` (one pass; few keys unless the data is tied)."""
    wanted = torch.tensor(buckets, device=flat.device)
    keys_in, digits_in = [], []
    for keys, digits in _top_digits(flat, mode, width, offset):
        inside = digits == buckets[0] if len(buckets) == 1 else torch.isin(digits, wanted)
        keys_in.append(keys[inside])  # indexing: torch.masked_select is ~10x slower on CPU
        digits_in.append(digits[inside])
    keys, digits = torch.cat(keys_in), torch.cat(digits_in)
    return {d: keys[digits == d] for d in buckets} if len(buckets) > 1 else {buckets[0]: keys}
