"""Exact top-m selection: the m-th largest value, how many entries are above and tied with it, masks.

TIES, Breadcrumbs and the global thresholds keep exactly ``m = int(density * numel)`` entries of
largest magnitude, ties at the threshold taken in index order. The previous kernels found the m-th
largest with ``np.partition``/``torch.kthvalue`` and then counted the entries above it with full-size
bool temporaries, a bool ``sum`` and a ``nonzero``, which took most of a TIES merge. Here the
selection also returns how many entries are greater than and equal to the m-th largest
(:class:`Threshold`), so a top-m mask or trim is one chunked pass that only looks for the position of
the last kept tie when some ties are dropped.

Where the m-th largest comes from depends on the device:

* **CPU: numpy's partition** on one copy (of ``|x|`` for the trims), then the counts on that copy.
  numpy 2 runs an AVX-512 quickselect here; measured against the two selections below at every size
  from 1e5 to 5e7 entries it was faster, single-threaded and with both cores, and by far the most
  robust when other processes load the machine (``benchmarks/select.md``). Expected linear time.
* **Other devices (CUDA): selections over the float bit patterns**, built from plain torch ops.

The bit trick: an IEEE float is sign | exponent | mantissa, so for non-negative floats the bit pattern
read as a signed integer of the same width is ordered exactly like the values (a larger exponent wins,
then a larger mantissa; +inf above every finite value). A negative float is mapped to minus its
magnitude's pattern, which keeps the order for any sign and sends -0.0 to the key of +0.0, so equal
floats get equal keys. ``|x|`` is the pattern with the sign bit cleared. (NaNs are not supported:
their keys sit beyond ±inf.) Two exact linear-time selections over these integer keys:

* **bracket** (first): the keys of a fixed, spread-out sample of up to 65536 entries give two keys
  that bracket the m-th largest with a wide margin (8 standard deviations of the sample rank). One
  pass of vectorized compares counts the keys above the bracket and copies out the few inside it; if
  the counts prove the m-th largest lies inside, it is selected among those keys alone.
* **radix** (when the sample misled the bracket): a ``bincount`` histogram of the top 16 bits of every
  key gives the bucket holding the m-th largest and how many entries lie in higher buckets; the keys
  of that bucket are pulled out and their next 16 bits histogrammed, and so on: 1 pass for bf16/fp16,
  2 for float32, 4 for float64, each O(n) whatever the data.

Among a few thousand keys left over, a sort is used (a fixed cost). On CPU (where the tests and the
benchmark force these paths) passes run over cache-sized chunks with reused buffers: a fresh
full-size temporary costs more in page faults than the arithmetic. On CUDA each pass is one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

_DIGIT = 16
_BINS = 1 << _DIGIT
_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}
CPU_CHUNK = 1 << 20  # elements per chunk on CPU: 4 MiB of float32 stays in a core's L2 between ops
NUMPY_ON_CPU = True  # CPU tensors use numpy's partition (faster at every size measured: benchmarks/select.md)
_SAMPLE = 1 << 16  # entries sampled to bracket the m-th largest (0: no bracket, radix only)
_MARGIN = 8.0  # bracket half-width, in standard deviations of the sample rank (binomial)
_SORT_BELOW = 2048  # keys left to select among are sorted when fewer than this


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
        ms: counts, each clamped to ``[0, numel]``; several share one pass over ``values``.
        absolute: rank ``|values|`` instead of ``values`` (no ``abs()`` copy is made).
    Returns:
        One :class:`Threshold` per m, in order.
    Raises:
        TypeError: ``values`` is not a float16/bfloat16/float32/float64 tensor.
    """
    if values.dtype not in _INT_VIEW:
        raise TypeError(f"selection needs a floating tensor, got {values.dtype}")
    flat = values.reshape(-1)
    n = flat.numel()
    ms = [min(max(int(m), 0), n) for m in ms]
    found = {m: Threshold(0, math.inf, 0, 0) for m in ms if m == 0}
    wanted = sorted({m for m in ms if m > 0})
    if wanted and flat.device.type == "cpu" and NUMPY_ON_CPU:
        found.update(zip(wanted, _partition_select(flat, wanted, absolute)))
    elif wanted:
        keys = _KeyMap(flat, absolute)
        found.update(_bracket_select(keys, wanted) if _SAMPLE else {})
        missing = [m for m in wanted if m not in found]
        if missing:
            found.update(zip(missing, _radix_select(keys, missing)))
    return tuple(found[m] for m in ms)


def kth_largest(values: Tensor, m: int) -> float:
    """The m-th largest entry of ``values`` (m >= 1), exactly; +inf when m == 0.

    Linear time (see the module docstring); the value is the one a sort would give, so thresholds
    are bit-for-bit what they were with ``np.partition``.
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
    Survivors are multiplied by 1.0 and the rest by 0.0, exactly as multiplying by a bool mask did
    (so a dropped negative entry becomes -0.0, as before).

    Args:
        tv: a task vector, a temporary the caller owns: modified in place.
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
    size = min(n, CPU_CHUNK) if flat.device.type == "cpu" else n
    keep_buf = torch.empty(size, dtype=flat.dtype, device=flat.device)
    drop_buf = torch.empty_like(keep_buf) if start > 0 else None
    for lo, hi in _chunks(flat):
        chunk = flat[lo:hi]
        # |chunk| into a reused buffer, then 1.0/0.0 in place: float masks multiply ~4x faster than bool
        keep = torch.abs(chunk, out=keep_buf[: hi - lo])
        if drop_buf is not None:  # top(stop) contains top(start): their difference is the band
            dropped = drop_buf[: hi - lo].copy_(keep)
            left_skip = _fill_top(dropped, skip, left_skip, dropped)
        left_top = _fill_top(keep, top, left_top, keep)
        if drop_buf is not None:
            keep.sub_(dropped)
        chunk.mul_(keep)
    return tv


def keep_magnitude_between_(tv: Tensor, lo: float, hi: float | None = None) -> Tensor:
    """Zero, in place, every entry of ``tv`` outside ``lo <= |tv| < hi`` (no upper bound when ``hi`` is
    None): the trims at global thresholds. Chunked, with float masks, like :func:`keep_magnitude_ranks_`
    (the products are those of multiplying by a bool mask).

    Args:
        tv: a task vector, a temporary the caller owns: modified in place.
        lo: smallest kept magnitude.
        hi: kept magnitudes are below this; None keeps everything from ``lo`` up (+inf included).
    Returns:
        ``tv``.
    """
    if not tv.is_contiguous():
        return tv.copy_(keep_magnitude_between_(tv.contiguous(), lo, hi))
    flat = tv.view(-1)
    size = min(flat.numel(), CPU_CHUNK) if flat.device.type == "cpu" else flat.numel()
    keep_buf = torch.empty(size, dtype=flat.dtype, device=flat.device)
    below_buf = torch.empty_like(keep_buf) if hi is not None else None
    for lo_i, hi_i in _chunks(flat):
        chunk = flat[lo_i:hi_i]
        keep = torch.abs(chunk, out=keep_buf[: hi_i - lo_i])
        if below_buf is not None:
            below = torch.lt(keep, hi, out=below_buf[: hi_i - lo_i])
            keep.ge_(lo).mul_(below)
        else:
            keep.ge_(lo)
        chunk.mul_(keep)
    return tv


def _fill_top(chunk: Tensor, th: Threshold, left: int, out: Tensor) -> int:
    """Write the top-``th.m`` mask of one chunk (coming after the earlier chunks) into ``out``.

    ``left`` is how many tied entries are still to be kept; returns what is left after this chunk.
    ``out`` may be ``chunk`` itself (a float buffer): comparisons then write 1.0/0.0 in place.
    """
    t = th.value
    if left <= 0:
        torch.gt(chunk, t, out=out)
        return 0
    if left >= th.equal:  # every tie is kept: no position to find
        torch.ge(chunk, t, out=out)
        return left
    ties = torch.eq(chunk, t)
    count = int(torch.count_nonzero(ties))
    if count <= left:
        torch.ge(chunk, t, out=out)
        return left - count
    cut = int(ties.nonzero()[left - 1]) + 1  # just after the last tie that is kept
    torch.gt(chunk[cut:], t, out=out[cut:])
    torch.ge(chunk[:cut], t, out=out[:cut])
    return 0


# -- the selections ---------------------------------------------------------------------------------
class _KeyMap:
    """How one tensor's entries map to ordered integer keys, chunk by chunk."""

    def __init__(self, flat: Tensor, absolute: bool):
        self.flat, self.dtype, self.itype = flat, flat.dtype, _INT_VIEW[flat.dtype]
        self.width = torch.iinfo(self.itype).bits
        # the raw bits already are the keys when no sign bit is set anywhere (magnitudes: the usual
        # case, checked by one read-only reduction); else |x| or the signed map
        signed = not absolute and bool(flat.view(self.itype).min() < 0)
        self.mode = "abs" if absolute else ("signed" if signed else "raw")
        self.offset = _BINS // 2 if signed else 0  # signed top digits -2^15..2^15-1 -> 0..2^16-1
        self.size = min(flat.numel(), CPU_CHUNK) if flat.device.type == "cpu" else flat.numel()

    def keys(self, values: Tensor, buf: Tensor | None = None) -> Tensor:
        """The keys of some of the tensor's values (``buf``: scratch of at least their size)."""
        bits = values.view(self.itype)
        if self.mode == "raw":
            return bits
        out = None if buf is None else buf[: bits.numel()]
        mag = torch.bitwise_and(bits, torch.iinfo(self.itype).max, out=out)  # clear the sign bit
        return mag if self.mode == "abs" else torch.where(bits < 0, -mag, mag)  # -0.0 -> 0, as +0.0

    def chunks(self) -> Iterator[Tensor]:
        """The keys of each chunk in turn (a view of the input or a reused buffer: use before next)."""
        buf = None if self.mode == "raw" else torch.empty(self.size, dtype=self.itype, device=self.flat.device)
        for lo, hi in _chunks(self.flat):
            yield self.keys(self.flat[lo:hi], buf)

    def value(self, key: int) -> float:
        """Back from a key to the float it stands for (a negative key is a negative float's magnitude)."""
        bits = key if key >= 0 else (-key) | int(torch.iinfo(self.itype).min)  # set the sign bit
        return torch.tensor(bits, dtype=self.itype).view(self.dtype).item()


def _partition_select(flat: Tensor, ms: Sequence[int], absolute: bool) -> list[Threshold]:
    """CPU: numpy's partition of one copy of the values (or of their magnitudes), then the counts on
    that copy: entries after position n-m are >= the threshold, so only they can be greater."""
    if flat.dtype == torch.bfloat16:  # numpy has no bf16; widening to float32 is exact (and a copy)
        arr = flat.float().numpy()
        if absolute:
            np.abs(arr, out=arr)
    else:
        arr = np.abs(flat.numpy()) if absolute else flat.numpy().copy()
    n = arr.size
    arr.partition(sorted({n - m for m in ms}))  # in place: every n-m position holds its sorted value
    out = []
    for m in ms:
        t = arr[n - m]
        out.append(Threshold(m, float(t), int(np.count_nonzero(arr[n - m + 1:] > t)), int(np.count_nonzero(arr == t))))
    return out


def _bracket_select(keys: _KeyMap, ms: Sequence[int]) -> dict[int, Threshold]:
    """The thresholds a sampled bracket proves it holds (see the module docstring); others are left out."""
    flat, n = keys.flat, keys.flat.numel()
    s = min(_SAMPLE, max(n // 16, 1))
    stride = n // s
    i = torch.arange(s, device=flat.device)
    # one entry per block of `stride`, at a scrambled offset so that the columns of a matrix are not
    # sampled in lockstep (7919 is prime); deterministic, so a merge is reproducible
    sample = torch.sort(keys.keys(flat[i * stride + (i * 7919) % stride]), descending=True).values
    lowest, highest = torch.iinfo(keys.itype).min, torch.iinfo(keys.itype).max
    positions = []  # per m: sample positions of the bracket's top and bottom keys (None: unbounded)
    for m in ms:
        p = m / n
        r, margin = p * s, _MARGIN * math.sqrt(s * p * (1 - p)) + _MARGIN
        positions += [min(int(r - margin), s - 1) if r - margin >= 0 else None, math.ceil(r + margin) if r + margin < s - 1 else None]
    known = [j for j in positions if j is not None]
    found_keys = iter(sample[torch.tensor(known, dtype=torch.long, device=flat.device)].tolist() if known else [])
    ends = [next(found_keys) if j is not None else None for j in positions]
    brackets = [(lowest if bottom is None else bottom, highest if top is None else top) for top, bottom in zip(ends[::2], ends[1::2])]
    above = [torch.zeros((), dtype=torch.int64, device=flat.device) for _ in ms]
    inside: list[list[Tensor]] = [[] for _ in ms]
    mask = torch.empty(keys.size, dtype=torch.bool, device=flat.device)
    between = torch.empty_like(mask)
    for chunk in keys.chunks():
        for j, (lo, hi) in enumerate(brackets):
            over = torch.gt(chunk, hi, out=mask[: chunk.numel()])
            above[j] += torch.count_nonzero(over)
            within = torch.ge(chunk, lo, out=between[: chunk.numel()]).logical_and_(over.logical_not_())
            inside[j].append(chunk[within])  # indexing: torch.masked_select is ~10x slower on CPU
    found = {}
    for m, greater, parts in zip(ms, torch.stack(above).tolist(), inside):
        members = torch.cat(parts)
        if greater < m <= greater + members.numel():  # proven: the m-th largest is inside
            ((key, more, equal),) = _refine(members, [m - greater], keys.width - _DIGIT, None, keys.offset)
            found[m] = Threshold(m, keys.value(key), greater + more, equal)
    return found


def _radix_select(keys: _KeyMap, ms: Sequence[int]) -> list[Threshold]:
    """Exact m-th largest keys whatever the data: histograms of 16-bit digits, top digit first."""
    shift, offset = keys.width - _DIGIT, keys.offset
    size = keys.size
    digit_buf = torch.empty(size, dtype=keys.itype, device=keys.flat.device)
    hist = None
    for chunk in keys.chunks():
        counts = torch.bincount(_top_digit(chunk, shift, offset, digit_buf), minlength=_BINS)
        hist = counts if hist is None else hist.add_(counts)
    picks = _pick(hist, ms)  # per m: (top digit, entries in higher buckets, rank in the bucket, bucket size)
    if shift == 0:  # bf16/fp16: the top digit is the whole key
        return [Threshold(m, keys.value(d - offset), above, equal) for m, (d, above, _, equal) in zip(ms, picks)]
    buckets = sorted({p[0] for p in picks})
    wanted = torch.tensor(buckets, device=keys.flat.device)
    members, member_digits = [], []
    for chunk in keys.chunks():  # second pass: the keys of the buckets holding the thresholds
        digits = _top_digit(chunk, shift, offset, digit_buf)
        inside = digits == buckets[0] if len(buckets) == 1 else torch.isin(digits, wanted)
        members.append(chunk[inside])
        member_digits.append(digits[inside])
    pool, pool_digits = torch.cat(members), torch.cat(member_digits)
    found = {}
    for d in buckets:
        group = [(m, above, rank) for m, (digit, above, rank, _) in zip(ms, picks) if digit == d]
        refined = _refine(pool[pool_digits == d], [rank for _, _, rank in group], shift - _DIGIT, d - offset, 0)
        for (m, above, _), (key, more, equal) in zip(group, refined):
            found[m] = Threshold(m, keys.value(key), above + more, equal)
    return [found[m] for m in ms]


def _top_digit(keys: Tensor, shift: int, offset: int, buf: Tensor) -> Tensor:
    """The top 16 bits of each key as a non-negative int, for bincount."""
    digits = torch.bitwise_right_shift(keys, shift, out=buf[: keys.numel()])
    return digits.to(torch.int32).add_(offset) if offset else digits  # signed: may overflow int16


def _refine(keys: Tensor, ranks: Sequence[int], shift: int, prefix: int | None, offset: int) -> list[tuple[int, int, int]]:
    """Select among ``keys``: for each rank (1 = largest), the key at that rank, how many of ``keys``
    are greater and how many equal it.

    ``keys`` share their bits above ``shift + 16``, worth ``prefix`` (signed); ``prefix=None`` means
    no shared bits yet (``shift`` is the top digit, shifted by ``offset`` to be non-negative).
    """
    if keys.numel() <= _SORT_BELOW:  # a handful of keys: sorting them beats a 65536-bin histogram
        ranked = torch.sort(keys, descending=True).values
        at = ranked[torch.tensor(list(ranks), device=keys.device) - 1]
        return list(zip(*torch.stack([at, (keys > at[:, None]).sum(1), (keys == at[:, None]).sum(1)]).tolist()))
    if prefix is None:
        digits, base = _top_digit(keys, shift, offset, torch.empty_like(keys)), -offset
    else:  # two's complement: a signed high part followed by unsigned lower digits
        digits, base = (keys >> shift) & (_BINS - 1), prefix << _DIGIT
    picks = _pick(torch.bincount(digits, minlength=_BINS), ranks)
    if shift == 0:
        return [(base + d, above, equal) for d, above, _, equal in picks]
    out: dict[int, tuple[int, int, int]] = {}
    for d in sorted({p[0] for p in picks}):  # ranks falling on one digit share the next level
        group = [(j, above, rank) for j, (digit, above, rank, _) in enumerate(picks) if digit == d]
        refined = _refine(keys[digits == d], [rank for _, _, rank in group], shift - _DIGIT, base + d, 0)
        out.update({j: (key, above + more, equal) for (j, above, _), (key, more, equal) in zip(group, refined)})
    return [out[j] for j in range(len(ranks))]


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


def _chunks(flat: Tensor) -> Iterator[tuple[int, int]]:
    """Index ranges covering ``flat``: cache-sized on CPU, the whole tensor on an accelerator."""
    n = flat.numel()
    step = CPU_CHUNK if flat.device.type == "cpu" else max(n, 1)
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)
