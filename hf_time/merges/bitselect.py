"""Exact selection of the m-th largest entry over the bit patterns of floats, from plain torch ops.

This is how :mod:`hf_time.merges.selection` finds thresholds on devices other than the CPU (CUDA:
``torch.kthvalue`` there is one thread block per slice, so one large tensor gets one block), and
what the tests run on CPU by forcing it.

The bit trick: an IEEE float is sign | exponent | mantissa, so for non-negative floats the bit pattern
read as a signed integer of the same width is ordered exactly like the values (a larger exponent wins,
then a larger mantissa; +inf above every finite value). A negative float is mapped to minus its
magnitude's pattern, which keeps the order for any sign and sends -0.0 to the key of +0.0, so equal
floats get equal keys. ``|x|`` is the pattern with the sign bit cleared. (NaNs are not supported:
their keys sit beyond ±inf.) Two exact linear-time selections over these integer keys:

* **bracket** (first): the keys of a fixed, spread-out sample (one entry in 64, 16384 to 65536 of
  them: :func:`sample_positions`) give two keys that bracket the m-th largest with a wide margin (8
  standard deviations of the sample rank). One pass of vectorized compares counts the keys above
  the bracket and copies out the few inside it; if the counts prove the m-th largest lies inside,
  it is selected among those keys alone.
* **radix** (when the sample misled the bracket): a ``bincount`` histogram of the top 16 bits of every
  key gives the bucket holding the m-th largest and how many entries lie in higher buckets; the keys
  of that bucket are pulled out and their next 16 bits histogrammed, and so on: 1 pass for bf16/fp16,
  2 for float32, 4 for float64, each O(n) whatever the data.

A few thousand keys left over are sorted (a fixed cost). On CPU, passes run over cache-sized chunks
with reused buffers (a fresh full-size temporary costs more in page faults than the arithmetic); on
other devices each pass is one chunk.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

_DIGIT = 16
_BINS = 1 << _DIGIT
_INT_VIEW = {  # the signed integer of each float's width
    torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64,
}
CPU_CHUNK = 1 << 18  # elements per chunk on CPU: 1 MiB of float32 stays in a core's L2 (2 MiB here) between ops
# Elements per slice where several operands are live at once (an elementwise merge, a TIES slice of n
# task vectors): 0.5 MiB per float32 operand, so they all stay in L2 (128K measured fastest of 16K..4M).
SLICE = 1 << 17
SAMPLE = 1 << 16  # at most this many entries are sampled to bracket the m-th largest (0: no bracket, radix only)
# Sample size: one entry in SAMPLE_EVERY (a gathered entry costs several streamed ones: one in 16 made
# the sample a fifth of ranking a 1M-entry tensor), but not below SAMPLE_FLOOR, under which the bracket
# got too wide to sit inside a bf16 run of ties (benchmarks/README.md, "Sixth pass").
SAMPLE_EVERY = 64
SAMPLE_FLOOR = 1 << 14
MARGIN = 8.0  # bracket half-width, in standard deviations of the sample rank (binomial)
SORT_BELOW = 2048  # keys left to select among are sorted when fewer than this

Found = tuple[float, int, int]  # (the m-th largest value, entries greater, entries equal)
Keyed = tuple[int, int, int]  # the same with the value's integer key


def select(flat: Tensor, ms: Sequence[int], absolute: bool) -> list[Found]:
    """For each m (1 <= m <= numel): the m-th largest of ``flat`` (or of ``|flat|``), exactly, with
    how many entries are greater than it and equal to it. ``flat`` is 1-D, any float dtype."""
    keys = _KeyMap(flat, absolute)
    found = _bracket_select(keys, ms) if SAMPLE else {}
    missing = [m for m in ms if m not in found]
    if missing:
        found.update(zip(missing, _radix_select(keys, missing)))
    return [found[m] for m in ms]


def chunks(flat: Tensor, size: int | None = None) -> Iterator[tuple[int, int]]:
    """Index ranges covering ``flat``: ``size`` entries (default :data:`CPU_CHUNK`) on CPU, the whole
    tensor on an accelerator."""
    n = flat.numel()
    step = (size or CPU_CHUNK) if flat.device.type == "cpu" else max(n, 1)
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


def chunk_size(flat: Tensor, size: int | None = None) -> int:
    """The size of scratch buffers for one chunk of ``flat`` (``size`` as in :func:`chunks`)."""
    return min(flat.numel(), size or CPU_CHUNK) if flat.device.type == "cpu" else flat.numel()


def sample_positions(n: int) -> np.ndarray:
    """Where the sample a bracket is read from lies in ``n`` entries: increasing int64 positions.

    Entry ``i * stride + (i * 7919) % stride`` for ``i < s``: one per block of ``stride``, at a scrambled
    offset so that the columns of a matrix are not sampled in lockstep (fixed, so a merge is
    reproducible). ``s`` is one entry in :data:`SAMPLE_EVERY`, at least :data:`SAMPLE_FLOOR` (never more
    than one in 16) and at most :data:`SAMPLE`.
    """
    s = min(SAMPLE, max(n // SAMPLE_EVERY, min(n // 16, SAMPLE_FLOOR), 1))
    stride = n // s
    i = np.arange(s, dtype=np.int64)
    return i * stride + (i * 7919) % stride


def bracket_ends(n: int, s: int, ms: Sequence[int]) -> list[tuple[int | None, int | None]]:
    """Per m: where the ends of its bracket sit in a sample of ``s`` of the ``n`` entries, sorted descending
    (the positions of the bracket's largest and smallest value; None: unbounded on that side),
    :data:`MARGIN` standard deviations of the sample rank either side of m's."""
    ends = []
    for m in ms:
        p = m / n
        r, margin = p * s, MARGIN * math.sqrt(s * p * (1 - p)) + MARGIN
        top = min(int(r - margin), s - 1) if r - margin >= 0 else None
        ends.append((top, math.ceil(r + margin) if r + margin < s - 1 else None))
    return ends


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
        self.size = chunk_size(flat)

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
        for lo, hi in chunks(self.flat):
            yield self.keys(self.flat[lo:hi], buf)

    def value(self, key: int) -> float:
        """Back from a key to the float it stands for (a negative key is a negative float's magnitude)."""
        bits = key if key >= 0 else (-key) | int(torch.iinfo(self.itype).min)  # set the sign bit
        return torch.tensor(bits, dtype=self.itype).view(self.dtype).item()


def _bracket_select(keys: _KeyMap, ms: Sequence[int]) -> dict[int, Found]:
    """The thresholds a sampled bracket proves it holds (see the module docstring); others are left out."""
    flat, n = keys.flat, keys.flat.numel()
    where = torch.from_numpy(sample_positions(n)).to(flat.device)
    ends = bracket_ends(n, where.numel(), ms)
    sample = torch.sort(keys.keys(flat[where]), descending=True).values
    wanted = [j for pair in ends for j in pair if j is not None]
    at = iter(sample[torch.tensor(wanted, dtype=torch.long, device=flat.device)].tolist() if wanted else [])
    info, brackets = torch.iinfo(keys.itype), []  # per m: (lowest, highest) key inside the bracket
    for top, bottom in ends:  # `at` holds the known ends in this order: top, then bottom
        hi = info.max if top is None else next(at)
        brackets.append((info.min if bottom is None else next(at), hi))
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
            found[m] = (keys.value(key), greater + more, equal)
    return found


def _radix_select(keys: _KeyMap, ms: Sequence[int]) -> list[Found]:
    """Exact m-th largest keys whatever the data: histograms of 16-bit digits, top digit first."""
    shift, offset = keys.width - _DIGIT, keys.offset
    digit_buf = torch.empty(keys.size, dtype=keys.itype, device=keys.flat.device)
    hist = None
    for chunk in keys.chunks():
        counts = torch.bincount(_top_digit(chunk, shift, offset, digit_buf), minlength=_BINS)
        hist = counts if hist is None else hist.add_(counts)
    picks = _pick(hist, ms)  # per m: (top digit, entries in higher buckets, rank in the bucket, bucket size)
    if shift == 0:  # bf16/fp16: the top digit is the whole key
        return [(keys.value(d - offset), above, equal) for d, above, _, equal in picks]
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
            found[m] = (keys.value(key), above + more, equal)
    return [found[m] for m in ms]


def _top_digit(keys: Tensor, shift: int, offset: int, buf: Tensor) -> Tensor:
    """The top 16 bits of each key as a non-negative int, for bincount."""
    digits = torch.bitwise_right_shift(keys, shift, out=buf[: keys.numel()])
    return digits.to(torch.int32).add_(offset) if offset else digits  # signed: may overflow int16


def _refine(keys: Tensor, ranks: Sequence[int], shift: int, prefix: int | None, offset: int) -> list[Keyed]:
    """Select among ``keys``: for each rank (1 = largest), the key at that rank, how many of ``keys``
    are greater and how many equal it.

    ``keys`` share their bits above ``shift + 16``, worth ``prefix`` (signed); ``prefix=None`` means
    no shared bits yet (``shift`` is the top digit, shifted by ``offset`` to be non-negative).
    """
    if keys.numel() <= SORT_BELOW:  # a handful of keys: sorting them beats a 65536-bin histogram
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
    out: dict[int, Keyed] = {}
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
