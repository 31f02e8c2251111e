"""Exact top-m selection: the m-th largest value, how many entries are above and tied with it, masks.

TIES, Breadcrumbs and the global thresholds keep exactly ``m = int(density * numel)`` entries of
largest magnitude, ties at the threshold taken in index order. The previous kernels found the m-th
largest with ``np.partition``/``torch.kthvalue`` and then counted the entries above it with full-size
bool temporaries, a bool ``sum`` and a ``nonzero``, which took most of a TIES merge. Here the
selection also returns how many entries are greater than and equal to the m-th largest
(:class:`Threshold`), so a top-m mask or trim is one chunked pass with float masks, which looks for
the position of the last kept tie only when some ties are dropped. When the counting pass of a tied
bracket (below) already saw where that tie lies, the threshold carries it (``cut``) and a TIES trim is
one ``torch.hardshrink`` per slice, with nothing left to count: the slices of the 271M model's TIES
merge took ~0.75x the time (``benchmarks/issue13_sixth_pass.log``).

Where the m-th largest comes from (figures: ``benchmarks/select.md``):

* **CPU, from** :data:`NUMPY_BRACKET_FROM` **entries: a sampled bracket.** A fixed, spread-out
  sample (one entry in 64, 16384 to 65536 of them, sorted by numpy) gives two values bracketing the
  m-th largest with a wide margin (:func:`hf_time.merges.bitselect.sample_positions`); one pass over
  cache-sized chunks counts the entries above the bracket and copies out the few inside it; when the
  counts prove the m-th largest lies inside, it is selected among those alone (numpy's partition).
  No full-size copy; otherwise the next path runs. The pass uses numpy's bool compares (fast) where
  it copies entries out, and where it only counts (the tied case below) torch compares written as
  float 1.0/0.0 into a reused buffer, then summed: 21-23 µs per 128K entries on the 2-core CPU of
  ``benchmarks/`` against 78-118 µs for a torch compare into bool and ``count_nonzero``. With that
  and 1 MiB chunks instead of 4 MiB, ranking four tensors of the 271M benchmark model took
  0.13-0.21 s instead of 0.20-0.26 s (``benchmarks/issue13_fourth_pass.log``).
  When both ends of the bracket are the same value, which is the usual case for the task vectors of
  bf16 checkpoints (a fifth of the entries can tie at the threshold), the pass only counts the
  entries above and equal to it: nothing is copied out or partitioned (3.7x faster on those).
  A task vector's thresholds are found from θ_i and θ_0 directly (``minus=``): the difference is
  taken chunk by chunk, so τ_i is never held whole. The experts of one tensor share the sample and
  the pass (:func:`thresholds_each`): each chunk of θ_0 is read once for all of them, which ranked
  the three experts of the 271M model in ~0.7x the time of one pass each (medians 1.15 s against
  1.62-1.67 s, ``benchmarks/issue13_sixth_pass.log``).
* **CPU, 16-bit inputs from** :data:`NUMPY_TIED_FROM` **entries, when the sample shows a run of
  ties** at the threshold (both ends of the bracket equal): the same pass, counting only. Task
  vectors of bf16/fp16 checkpoints (ranked from θ_i and θ_0) are the case; float32 data is left to
  the partition, which the sample would only slow down.
* **CPU, smaller tensors: numpy's partition** of one copy (of ``|x|`` for the trims), the counts read
  from that copy. numpy 2 runs an AVX-512 quickselect here, faster than anything built from torch ops
  at these sizes, and single-threaded, so robust when other processes load the machine. Magnitudes
  that are mostly exact zeros (the task vector of a merged expert) are partitioned without their
  zeros when the threshold lies among or next to them, where the partition is 5-30x slower
  (:func:`_largest`).
* **Other devices (CUDA): exact linear-time selections over the float bit patterns** built from plain
  torch ops (:mod:`hf_time.merges.bitselect`): the same bracket on integer keys, then a 16-bit radix
  select as the fallback.

Masks and trims run over the chunks of :func:`hf_time.merges.bitselect.chunks`: cache-sized with
reused buffers on CPU (a fresh full-size temporary costs more in page faults than the arithmetic),
one chunk on other devices.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from hf_time.merges import bitselect
from hf_time.merges.bitselect import chunk_size, chunks

NUMPY_ON_CPU = True  # CPU tensors are selected by numpy (False: by bitselect, as on other devices)
NUMPY_BRACKET_FROM = 1 << 22  # CPU tensors from this many entries use the numpy bracket (select.md)
NUMPY_TIED_FROM = 1 << 18  # 16-bit inputs from here: the bracket when its sample shows a run of ties (select.md)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Threshold:
    """Where the ``m`` largest entries of a tensor end.

    Attributes:
        m: how many entries are kept.
        value: the m-th largest value (``inf`` when m == 0, with both counts 0: nothing is kept).
        greater: how many entries are strictly greater than ``value`` (all kept).
        equal: how many entries equal ``value``; the first ``m - greater`` of them in index order are kept.
        cut: the index just after the last kept one of them, when the selection found it (the counting
            pass of a tied bracket: :func:`thresholds_each`), else None. Not compared: every path gives
            the same thresholds, some with their cut.
    """

    m: int
    value: float
    greater: int
    equal: int
    cut: int | None = field(default=None, compare=False)

    @property
    def ties_kept(self) -> int:
        """How many entries equal to ``value`` are kept (the first ones in index order)."""
        return self.m - self.greater


def thresholds(values: Tensor, ms: Sequence[int], *, absolute: bool = False,
               minus: Tensor | None = None) -> tuple[Threshold, ...]:
    """The exact m-th largest value of ``values`` for each m, with the counts a top-m mask needs.

    Args:
        values: any floating tensor (not modified); its shape is ignored.
        ms: counts, each clamped to ``[0, numel]``; several share one pass over ``values``.
        absolute: rank ``|values|`` instead of ``values`` (only small CPU tensors get an ``abs()`` copy).
        minus: rank ``values - minus`` instead (same shape, any floating dtype; the difference is taken
            in float32, or float64 for float64 inputs): a task vector's thresholds straight from θ_i
            and θ_0. Large CPU tensors compute it chunk by chunk and never hold it whole.
    Returns:
        One :class:`Threshold` per m, in order.
    Raises:
        TypeError: ``values`` is not a float16/bfloat16/float32/float64 tensor.
    """
    return thresholds_each([values], [ms], absolute=absolute, minus=minus)[0]


def thresholds_each(values: Sequence[Tensor], ms: Sequence[Sequence[int]], *, absolute: bool = False,
                    minus: Tensor | None = None) -> list[tuple[Threshold, ...]]:
    """:func:`thresholds` of several tensors with as many entries, ``ms[j]`` for ``values[j]``, all ranked
    less the same ``minus``: the task vectors of the experts of one tensor, from θ_i and θ_0.

    The same thresholds as one :func:`thresholds` call per tensor, but the large CPU tensors share one
    sample and one counting pass, where each chunk of ``minus`` is read and widened once for all of them.

    Raises:
        TypeError: a tensor is not a float16/bfloat16/float32/float64 tensor.
        ValueError: the tensors differ in size.
    """
    if any(t.dtype not in _FLOAT_DTYPES for t in (*values, *([] if minus is None else [minus]))):
        raise TypeError(f"selection needs floating tensors, got {[t.dtype for t in values]}")
    flats = [v.reshape(-1) for v in values]
    sub = None if minus is None else minus.reshape(-1)
    if len({f.numel() for f in flats} | (set() if sub is None else {sub.numel()})) > 1:
        raise ValueError("thresholds_each ranks tensors of one size (and minus of that size too)")
    if not flats:
        return []
    n = flats[0].numel()
    ms, found, wanted = _requests(ms, n)
    cpu = flats[0].device.type == "cpu" and NUMPY_ON_CPU
    # 16-bit checkpoints: their task vectors tie in long runs, and counting a run beats the partition
    sixteen = (torch.bfloat16, torch.float16)
    bracketed = [j for j, flat in enumerate(flats) if wanted[j] and cpu and (n >= NUMPY_BRACKET_FROM or (
        n >= NUMPY_TIED_FROM and (flat.dtype in sixteen or (sub is not None and sub.dtype in sixteen))))]
    if bracketed:
        ranked = _Ranked([flats[j] for j in bracketed], sub)
        tie_counts: list[dict[int, list[int]]] = [{} for _ in bracketed]
        proven = _bracket_select([n], [lambda: contextlib.nullcontext(ranked)], [wanted[j] for j in bracketed],
                                 absolute, only_tied=n < NUMPY_BRACKET_FROM, tie_counts=tie_counts)
        for r, (j, more) in enumerate(zip(bracketed, proven)):
            found[j].update({m: _with_cut(th, ranked, r, tie_counts[r].get(m), absolute) for m, th in more.items()})
    for j, flat in enumerate(flats):
        missing = [m for m in wanted[j] if m not in found[j]]
        if missing:
            if sub is not None:
                flat = difference(flat, sub)
            if cpu:
                found[j].update(zip(missing, _partition_select(flat, missing, absolute)))
            else:
                selected = bitselect.select(flat, missing, absolute)
                found[j].update((m, Threshold(m, *f)) for m, f in zip(missing, selected))
    return [tuple(got[m] for m in w) for got, w in zip(found, ms)]


def _requests(ms: Sequence[Sequence[int]], n: int) -> tuple[list[list[int]], list[dict[int, Threshold]], list[list[int]]]:
    """Per tensor of ``n`` entries: its counts clamped to ``[0, n]``, the thresholds known without ranking
    (m = 0: nothing is kept), and the distinct counts left to rank, increasing."""
    ms = [[min(max(int(m), 0), n) for m in wanted] for wanted in ms]
    known = [{m: Threshold(0, math.inf, 0, 0) for m in w if m == 0} for w in ms]
    return ms, known, [sorted({m for m in w if m > 0}) for w in ms]


def _with_cut(th: Threshold, ranked: _Ranked, j: int, counts: list[int] | None, absolute: bool) -> Threshold:
    """``th`` with its cut, from the ties the counting pass found in each chunk of tensor j: the chunk
    holding the last kept tie is ranked again to find its position (no chunk when all or none are kept)."""
    kept = th.ties_kept
    if counts is None:
        return th
    if kept <= 0 or kept >= th.equal:
        return replace(th, cut=0 if kept <= 0 else ranked.flats[0].numel())
    before = 0
    for (lo, hi), count in zip(chunks(ranked.flats[0]), counts):
        if before + count >= kept:
            _, chunk = next(ranked.chunks(absolute, [j], span=(lo, hi)))
            at = torch.nonzero(chunk == th.value)[kept - before - 1, 0]
            return replace(th, cut=lo + int(at) + 1)
        before += count
    raise AssertionError("the chunks hold fewer ties than counted")


def difference(values: Tensor, minus: Tensor) -> Tensor:
    """``values - minus`` as a fresh tensor of at least float32 precision, from inputs of any floating dtype.

    ``minus`` is widened chunk by chunk into a cache-sized buffer when its dtype differs (a mixed-dtype
    subtraction leaves torch's vectorized CPU path: a float32 minus a bf16 tensor is ~4x slower than
    two float32 tensors, and a whole widened copy costs 4 bytes per entry); the values are those of
    ``values.float() - minus.float()``.
    """
    out = torch.empty(values.shape, dtype=_wide(values, minus), device=values.device)
    flat, flat_values, flat_minus = out.view(-1), values.reshape(-1), minus.reshape(-1)
    widened = torch.empty(chunk_size(flat), dtype=out.dtype, device=out.device)
    for lo, hi in chunks(flat):
        part = flat_minus[lo:hi]
        flat[lo:hi].copy_(flat_values[lo:hi]).sub_(part if part.dtype == out.dtype else widened[: hi - lo].copy_(part))
    return out


def _wide(a: Tensor, b: Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)


def kth_largest(values: Tensor, m: int) -> float:
    """The m-th largest entry of ``values`` (m >= 1), exactly; +inf when m == 0.

    Linear time in expectation (see the module docstring); the value is the one a sort would give, so
    thresholds are bit-for-bit what they were with ``np.partition``.
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
    left, ties = th.ties_kept, None
    for lo, hi in chunks(flat):
        chunk = flat[lo:hi].abs() if absolute else flat[lo:hi]
        ties = _scratch(ties, chunk)
        left = _fill_top(chunk, th, left, out[lo:hi], ties)
    return out.view(values.shape)


class MagnitudeTrim:
    """Zeroes the entries of a task vector outside a magnitude selection, one slice at a time.

    The selection is fixed when the trim is made (over the whole tensor); :meth:`apply_` is then
    called on consecutive slices of it **in index order**, so that ties at a threshold are kept in
    index order exactly as one pass over the whole tensor would (the trim carries how many ties are
    left). This is what lets a TIES merge trim, elect and combine cache-sized slices of its task
    vectors instead of whole stacked tensors, with the same bits.

    Survivors are kept as they are and the rest become zeros, of either sign. A top-m trim whose threshold
    knows where its kept ties end (:attr:`Threshold.cut`, from the counting pass of a tied bracket) is one
    ``torch.hardshrink`` pass per slice (``|x| > t``, or ``|x| >= t`` before the cut), which writes +0.0,
    and so is a trim at a global threshold (``|x| >= lo``); the others count the ties slice by slice (or
    compare with a band's two bounds) and multiply by a float mask, which leaves -0.0 for a dropped
    negative entry. The merges add the trimmed task vectors onto +0.0 (``sum(0)``, or a zero-filled
    accumulator), where either zero gives +0.0, so their outputs are the same bits either way
    (``tests/test_sliced_merges.py``).
    """

    def __init__(self, *, top: Threshold | None = None, skip: Threshold | None = None,
                 lo: float | None = None, hi: float | None = None):
        self._top, self._skip, self._lo, self._hi = top, skip, lo, hi
        self._left_top = top.ties_kept if top is not None else 0
        self._left_skip = skip.ties_kept if skip is not None else 0
        self._keep: Tensor | None = None
        self._drop: Tensor | None = None
        self._ties: Tensor | None = None
        self._at = 0  # where the next slice starts
        # One hardshrink per slice, (cut, t): |x| >= t before the cut, |x| > t from it. A top-m trim whose
        # threshold knows its cut; a trim at a global threshold keeps |x| >= lo everywhere (all before its cut).
        self._shrink = None
        if top is not None and skip is None and top.cut is not None and top.m > 0:
            self._shrink = (top.cut, top.value)
        elif top is None and skip is None and lo is not None and hi is None:
            self._shrink = (sys.maxsize, lo)
        self._below: tuple[torch.dtype, float] | None = None  # the bound before the cut, in the slices' dtype

    @classmethod
    def ranks(cls, values: Tensor, start: int, stop: int, *, minus: Tensor | None = None) -> MagnitudeTrim | None:
        """Keep the entries whose magnitude rank is in ``start+1 .. stop`` (ranks from the largest
        ``|values|``, or ``|values - minus|``, ties in index order): ``start=0`` is a top-``stop`` trim
        (TIES), ``start > 0`` a band (Breadcrumbs). None when everything is kept."""
        return cls.ranks_each([values], [(start, stop)], minus=minus)[0]

    @classmethod
    def ranks_each(cls, values: Sequence[Tensor], bands: Sequence[tuple[int, int]], *,
                   minus: Tensor | None = None) -> list[MagnitudeTrim | None]:
        """:meth:`ranks` of each of ``values`` (tensors of one size) for its ``(start, stop)`` band, all less
        the same ``minus`` (the experts of one tensor, from θ_0), ranked together (:func:`thresholds_each`)."""
        out: list[MagnitudeTrim | None] = [None] * len(values)
        todo = []
        for j, (v, (start, stop)) in enumerate(zip(values, bands)):
            n = v.numel()
            start, stop = min(max(start, 0), n), min(max(stop, 0), n)
            if not (start == 0 and stop == n):
                todo.append((j, start, stop))
        found = thresholds_each([values[j] for j, _, _ in todo], [[stop, start] for _, start, stop in todo],
                                absolute=True, minus=minus)
        for (j, start, _), (top, skip) in zip(todo, found):
            out[j] = cls(top=top, skip=skip if start > 0 else None)
        return out

    @classmethod
    def between(cls, lo: float, hi: float | None = None) -> MagnitudeTrim:
        """Keep the entries with ``lo <= |x| < hi`` (no upper bound when ``hi`` is None): the trims at
        global thresholds."""
        return cls(lo=lo, hi=hi)

    def apply_(self, chunk: Tensor) -> Tensor:
        """Trim ``chunk`` (1-D, contiguous), the next slice after those already trimmed, in place."""
        if self._shrink is not None:
            return self._shrink_(chunk)
        return self._mask_(chunk)

    def _shrink_(self, chunk: Tensor) -> Tensor:
        """Keep ``|x| >= t`` before the cut and ``|x| > t`` from it: one pass per part instead of three
        (|x| into a buffer, compare, multiply) and no ties to count."""
        cut, t = self._shrink
        lo = self._at
        self._at += chunk.numel()
        split = min(max(cut - lo, 0), chunk.numel())
        if split:
            if self._below is None or self._below[0] != chunk.dtype:
                self._below = (chunk.dtype, _float_below(t, chunk.dtype))
            below = self._below[1]
            if below >= 0:  # else t <= 0: everything before the cut is kept
                torch.hardshrink(chunk[:split], below, out=chunk[:split])
        if split < chunk.numel():
            torch.hardshrink(chunk[split:], t, out=chunk[split:])
        return chunk

    def _mask_(self, chunk: Tensor) -> Tensor:
        """:meth:`apply_` by counting the ties and multiplying by a float mask: |chunk| into a reused buffer,
        then 1.0/0.0 in place (float masks multiply ~4x faster than bool ones)."""
        k = chunk.numel()
        if self._keep is None or self._keep.numel() < k or self._keep.dtype != chunk.dtype:
            self._keep = torch.empty(k, dtype=chunk.dtype, device=chunk.device)
            self._drop = torch.empty_like(self._keep) if self._skip is not None or self._hi is not None else None
        keep = torch.abs(chunk, out=self._keep[:k])
        if self._top is None:  # global thresholds
            if self._hi is not None:
                below = torch.lt(keep, self._hi, out=self._drop[:k])
                keep.ge_(self._lo).mul_(below)
            else:
                keep.ge_(self._lo)
            return chunk.mul_(keep)
        dropped = None
        if self._skip is not None:  # top(stop) contains top(start): their difference is the band
            dropped = self._drop[:k].copy_(keep)
            self._left_skip = _fill_top(dropped, self._skip, self._left_skip, dropped, self._scratch(keep))
        self._left_top = _fill_top(keep, self._top, self._left_top, keep, self._scratch(keep))
        if dropped is not None:
            keep.sub_(dropped)
        return chunk.mul_(keep)

    def _scratch(self, like: Tensor) -> Tensor:
        self._ties = _scratch(self._ties, like)
        return self._ties


def keep_magnitude_ranks_(tv: Tensor, start: int, stop: int) -> Tensor:
    """Zero, in place, every entry of ``tv`` whose magnitude rank is not in ``start+1 .. stop``.

    Ranks count from the largest ``|tv|`` (1) down, ties in index order, so exactly ``stop - start``
    entries survive: ``start=0`` is a top-``stop`` trim (TIES), ``start > 0`` a band (Breadcrumbs).
    See :class:`MagnitudeTrim`.

    Args:
        tv: a task vector, a temporary the caller owns: modified in place.
        start: how many of the largest magnitudes are dropped (0 for a plain top-k).
        stop: rank of the last kept entry (``start <= stop``).
    Returns:
        ``tv``.
    """
    return apply_trim_(tv, MagnitudeTrim.ranks(tv, start, stop))


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
    return apply_trim_(tv, MagnitudeTrim.between(lo, hi))


def apply_trim_(tv: Tensor, trim: MagnitudeTrim | None) -> Tensor:
    """Apply a fresh ``trim`` (None: keep everything) to the whole of ``tv``, chunk by chunk, in place."""
    if trim is None:
        return tv
    if not tv.is_contiguous():
        return tv.copy_(apply_trim_(tv.contiguous(), trim))
    flat = tv.view(-1)
    for lo, hi in chunks(flat):
        trim.apply_(flat[lo:hi])
    return tv


def _float_below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value``, so that ``|x| > below`` is ``|x| >= value`` for every
    ``x`` of that dtype; -1.0 for ``value <= 0`` (every ``|x| >= value``)."""
    if value <= 0:
        return -1.0
    nearest = torch.tensor(value, dtype=dtype)  # ``value`` itself when it is a ``dtype`` number
    if float(nearest) < value:  # rounded down: no dtype number lies between it and ``value``
        return float(nearest)
    return float(torch.nextafter(nearest, torch.tensor(0.0, dtype=dtype)))


def _scratch(buf: Tensor | None, like: Tensor) -> Tensor:
    """A float32 buffer of at least ``like``'s size on its device: ``buf`` when it is one, else a new one."""
    if buf is None or buf.numel() < like.numel() or buf.device != like.device:
        buf = torch.empty(like.numel(), dtype=torch.float32, device=like.device)
    return buf


def _fill_top(chunk: Tensor, th: Threshold, left: int, out: Tensor, ties: Tensor) -> int:
    """Write the top-``th.m`` mask of one chunk (coming after the earlier chunks) into ``out``.

    ``left`` is how many tied entries are still to be kept; returns what is left after this chunk.
    ``out`` may be ``chunk`` itself (a float buffer): comparisons then write 1.0/0.0 in place.
    ``ties`` is a float32 scratch buffer of at least the chunk's size (see :func:`_count`).
    """
    t = th.value
    if left <= 0:
        torch.gt(chunk, t, out=out)
        return 0
    if left >= th.equal:  # every tie is kept: no position to find
        torch.ge(chunk, t, out=out)
        return left
    ties = torch.eq(chunk, t, out=ties[: chunk.numel()])
    count = _count(ties)
    if count <= left:
        torch.ge(chunk, t, out=out)
        return left - count
    cut = int(ties.nonzero()[left - 1]) + 1  # just after the last tie that is kept
    torch.gt(chunk[cut:], t, out=out[cut:])
    torch.ge(chunk[:cut], t, out=out[:cut])
    return 0


# -- CPU selections -----------------------------------------------------------------------------------
def _numpy_values(flat: Tensor) -> np.ndarray:
    """A numpy view of the values (numpy has no bf16: widened to float32, exact, a copy)."""
    return flat.float().numpy() if flat.dtype == torch.bfloat16 else flat.numpy()


def _partition_select(flat: Tensor, ms: Sequence[int], absolute: bool) -> list[Threshold]:
    """CPU: numpy's partition of one copy of the values (or of their magnitudes), then the counts on
    that copy: entries after position n-m are >= the threshold, so only they can be greater."""
    values = _numpy_values(flat)
    fresh = flat.dtype == torch.bfloat16  # already a copy: partition it in place
    arr = np.abs(values, out=values if fresh else None) if absolute else (values if fresh else values.copy())
    return [Threshold(m, *found) for m, found in zip(ms, _largest(arr, ms, nonnegative=absolute))]


ZEROS_NEAR = 1 / 8  # _largest sets zeros aside when an m-th largest is a zero or within this share of ranks of one


def _largest(arr: np.ndarray, ms: Sequence[int], *, nonnegative: bool) -> list[tuple[float, int, int]]:
    """For each m (1 <= m <= ``arr.size``): the m-th largest entry of ``arr``, with how many entries are
    greater than it and equal to it. ``arr`` is a copy the caller owns: it is partitioned in place.

    numpy's partition slows down 5-30x when the position it selects lies in, or next to, a mass of equal
    values (1M magnitudes, 80% of them zero, the 20% largest kept: 40-50 ms instead of ~2 ms), and the
    task vectors of merged or sparsified experts (a TIES or DARE output, the chain of a TIES timeline)
    are mostly exact zeros with about the density kept. So for ``nonnegative`` values (magnitudes), when
    some m-th largest is a zero or within :data:`ZEROS_NEAR` of the ranks of one, the zeros are set
    aside: that m-th largest is 0 when m exceeds the non-zero count, else it is found among the non-zero
    entries alone. Elsewhere the partition runs as it is (setting zeros aside costs a copy: slower there).
    """
    n = arr.size
    if nonnegative:
        nonzero = int(np.count_nonzero(arr))
        if nonzero < n and max(ms) > nonzero - n * ZEROS_NEAR:
            found = {m: (0.0, nonzero, n - nonzero) for m in ms if m > nonzero}
            rest = [m for m in ms if m <= nonzero]
            if rest:
                found.update(zip(rest, _largest(arr[arr != 0], rest, nonnegative=False)))
            return [found[m] for m in ms]
    arr.partition(sorted({n - m for m in ms}))  # in place: every n-m position holds its sorted value
    out = []
    for m in ms:  # entries after position n-m are >= the threshold, so only they can be greater
        t = arr[n - m]
        out.append((float(t), int(np.count_nonzero(arr[n - m + 1:] > t)), int(np.count_nonzero(arr == t))))
    return out


@dataclass(frozen=True)
class Part:
    """One piece of a tensor that is never built whole: :func:`thresholds_of_parts` ranks their concatenation.

    Attributes:
        size: its number of entries.
        open: a context manager giving the piece as ``(values, minus or None)`` (ranked: ``values - minus``),
            entered once per pass over the pieces; on exit the piece may be dropped (e.g. its pages
            released). For :func:`thresholds_of_parts_each`, ``values`` is a sequence: the piece of each
            ranked tensor, all less the same ``minus``.
    """

    size: int
    open: Callable[[], contextlib.AbstractContextManager[tuple[Tensor, Tensor | None]]]


def thresholds_of_parts(parts: Sequence[Part], ms: Sequence[int], *, absolute: bool = False) -> tuple[Threshold, ...]:
    """:func:`thresholds` of the concatenation of ``parts``, on CPU without building it.

    This is what a *global* magnitude threshold needs: the m-th largest |θ_i − θ_0| over every tensor
    of a model. The sampled bracket reads each piece twice (a sample, then one counting pass), one at a
    time, so memory is one piece's chunk whatever the model size; only when the bracket cannot prove
    the answer (or the model is small) are the pieces concatenated, as before.
    """
    def one(part: Part) -> Part:
        return Part(part.size, functools.partial(_listed, part))

    return thresholds_of_parts_each([one(p) for p in parts], [ms], absolute=absolute)[0]


def thresholds_of_parts_each(parts: Sequence[Part], ms: Sequence[Sequence[int]], *,
                             absolute: bool = False) -> list[tuple[Threshold, ...]]:
    """:func:`thresholds_of_parts` of several tensors pieced alike, ``ms[j]`` for the j-th of the values each
    part gives: the global thresholds of every expert of a model, all less θ_0.

    The same thresholds as one :func:`thresholds_of_parts` call per tensor, but each piece is opened for
    all of them at once (a sample, then one counting pass) and each chunk of ``minus`` is widened once.
    """
    n = sum(p.size for p in parts)
    ms, found, wanted = _requests(ms, n)
    todo = [j for j, w in enumerate(wanted) if w]
    if todo and NUMPY_ON_CPU and n >= NUMPY_BRACKET_FROM:
        proven = _bracket_select([p.size for p in parts], [functools.partial(_opened, p, todo) for p in parts],
                                 [wanted[j] for j in todo], absolute)
        for j, more in zip(todo, proven):
            found[j].update(more)
    for j in todo:
        missing = [m for m in wanted[j] if m not in found[j]]
        if missing:  # one tensor at a time: its concatenation is the one full-size copy held
            pieces = []
            for part in parts:
                with part.open() as (values, minus):
                    pieces.append((values[j] if minus is None else difference(values[j], minus)).reshape(-1))
            found[j].update(zip(missing, thresholds(torch.cat(pieces), missing, absolute=absolute)))
    return [tuple(got[m] for m in w) for got, w in zip(found, ms)]


@contextlib.contextmanager
def _listed(part: Part) -> Iterator[tuple[list[Tensor], Tensor | None]]:
    with part.open() as (values, minus):
        yield [values], minus


@contextlib.contextmanager
def _opened(part: Part, which: Sequence[int]) -> Iterator[_Ranked]:
    with part.open() as (values, minus):
        yield _Ranked([values[j] for j in which], minus)


class _Ranked:
    """One piece of one or more tensors for the bracket, each ranked less the same ``minus``: a sample
    (numpy), then cache-sized chunks (torch, reused buffers).

    Chunks come widened to float32 (float64 stays float64) and, with ``absolute``, as magnitudes, in a
    buffer of this object's own (or a view of a float32 input when there is nothing to change); each
    chunk of ``minus`` is widened once for every tensor.
    """

    def __init__(self, flats: Sequence[Tensor], minus: Tensor | None):
        self.flats, self.minus = [f.reshape(-1) for f in flats], None if minus is None else minus.reshape(-1)
        self.wides = [_wide(f, f if minus is None else self.minus) for f in self.flats]

    def samples(self, at: np.ndarray, which: Sequence[int]) -> list[np.ndarray]:
        """The entries at positions ``at`` of each tensor j in ``which``, less ``minus``'s (gathered once)."""
        index = torch.from_numpy(at)
        minus = None if self.minus is None else self.minus[index]
        out = []
        for j in which:
            flat, wide = self.flats[j], self.wides[j]
            values = flat[index].to(wide)
            if minus is not None:
                values.sub_(minus.to(wide))
            out.append(values.numpy())
        return out

    def chunks(self, absolute: bool, which: Sequence[int], *,
               span: tuple[int, int] | None = None) -> Iterator[tuple[int, Tensor]]:
        """``(j, chunk)`` for each tensor j in ``which``, range by range (each chunk is valid until the next);
        only the range ``span`` when given."""
        size = chunk_size(self.flats[0])
        own = {wide: torch.empty(size, dtype=wide) for wide in set(self.wides)}
        widened = {wide: torch.empty(size, dtype=wide) for wide in own} if self.minus is not None else {}
        for lo, hi in [span] if span else chunks(self.flats[0]):
            k = hi - lo
            minus = {}  # this range of minus, per dtype (widened once)
            for j in which:
                flat, wide = self.flats[j][lo:hi], self.wides[j]
                if self.minus is not None:
                    if wide not in minus:
                        part = self.minus[lo:hi]
                        minus[wide] = part if part.dtype == wide else widened[wide][:k].copy_(part)
                    chunk = own[wide][:k].copy_(flat).sub_(minus[wide])
                elif flat.dtype != wide or absolute:
                    chunk = own[wide][:k].copy_(flat)
                else:
                    chunk = flat
                yield j, chunk.abs_() if absolute else chunk


Bracket = tuple[float, float]  # (low, high): the m-th largest lies in low..high (both ends included)


Opener = Callable[[], contextlib.AbstractContextManager[_Ranked]]


def _bracket_select(sizes: Sequence[int], opens: Sequence[Opener], ms: Sequence[Sequence[int]], absolute: bool, *,
                    only_tied: bool = False, tie_counts: list[dict[int, list[int]]] | None = None,
                    ) -> list[dict[int, Threshold]]:
    """CPU, large tensors: for each tensor j of the pieces, the thresholds ``ms[j]`` that a sampled bracket
    proves it holds (module docstring), by counts over cache-sized chunks (16-bit values widened and
    ``values - minus`` taken chunk by chunk); no full-size copy. The others are left out (partition them).

    The pieces hold ``sizes`` entries of each tensor and are ranked as their concatenation; ``opens[k]()``
    gives piece k, entered once for the sample and once for the count. With ``only_tied`` (mid-size
    tensors), a tensor is counted only when one of its brackets sits inside a run of ties, where counting
    beats numpy's partition 3-4x; its other brackets (a Breadcrumbs band's top-gamma end) then ride along in
    the same pass, their few entries copied out, instead of partitioning the whole tensor for them. With no
    bracket in a run of ties the partition is faster at these sizes. ``tie_counts[j][m]``, when given, gets
    how many entries of each chunk tie at a bracket inside a run of ties.
    """
    n = sum(sizes)
    where = bitselect.sample_positions(n)  # positions in the concatenation, increasing
    starts = np.cumsum([0, *sizes])

    def sampled(positions: np.ndarray, todo: Sequence[int]) -> dict[int, list[Bracket]]:
        """The brackets of each tensor j in ``todo`` from its entries at ``positions``."""
        owner = np.searchsorted(starts, positions, side="right") - 1
        samples: dict[int, list[np.ndarray]] = {j: [] for j in todo}
        for k, open_piece in enumerate(opens):
            at = positions[owner == k] - starts[k]
            if at.size:
                with open_piece() as ranked:
                    for j, got in zip(todo, ranked.samples(at, todo)):
                        samples[j].append(got)
        out = {}
        for j in todo:
            sample = np.concatenate(samples[j])
            sample = np.sort(np.abs(sample, out=sample) if absolute else sample)[::-1]
            out[j] = [(-np.inf if bottom is None else sample[bottom], np.inf if top is None else sample[top])
                      for top, bottom in bitselect.bracket_ends(n, sample.size, ms[j])]
        return out

    # A part of the sample first (SAMPLE_FLOOR entries): when it puts every bracket of a tensor inside a
    # run of ties, as it does for bf16 task vectors, that is all the whole sample could do, at a fraction
    # of its gathering; the other tensors take the whole sample (a narrower bracket to copy out).
    step = where.size // bitselect.SAMPLE_FLOOR
    first = sampled(where[::step], range(len(ms))) if step > 1 else {}
    found = {j: pairs for j, pairs in first.items() if all(low == high for low, high in pairs)}
    rest = [j for j in range(len(ms)) if j not in found]
    if rest:
        found.update(sampled(where, rest))
    brackets: list[list[Bracket] | None] = [
        None if only_tied and all(low != high for low, high in found[j]) else found[j] for j in range(len(ms))]
    which = [j for j, pairs in enumerate(brackets) if pairs is not None]
    above = [[0] * len(wanted) for wanted in ms]
    tied = [[0] * len(wanted) for wanted in ms]
    inside: list[list[list[np.ndarray]]] = [[[] for _ in wanted] for wanted in ms]
    mask = over = within = None  # scratch for every piece's chunks
    for open_piece in opens if which else ():
        with open_piece() as ranked:
            for j, chunk in ranked.chunks(absolute, which):
                k = chunk.numel()
                if mask is None or mask.numel() < k or mask.dtype != chunk.dtype:
                    mask, over, within = torch.empty(k, dtype=chunk.dtype), np.empty(k, bool), np.empty(k, bool)
                for b, (low, high) in enumerate(brackets[j]):  # -0.0 == +0.0, as the keys
                    if low == high:  # a bracket inside a run of ties (bf16 task vectors): counting is enough,
                        # in float masks and sums (torch's compares into bool are ~5x slower)
                        above[j][b] += _count(torch.gt(chunk, float(high), out=mask[:k]))
                        ties = _count(torch.eq(chunk, float(high), out=mask[:k]))
                        tied[j][b] += ties
                        if tie_counts is not None:
                            tie_counts[j].setdefault(ms[j][b], []).append(ties)
                        continue
                    # the entries inside are copied out: numpy's bool compares and logic are fast
                    values = chunk.numpy()
                    o = np.greater(values, high, out=over[:k])
                    above[j][b] += int(np.count_nonzero(o))
                    w = np.greater_equal(values, low, out=within[:k])
                    inside[j][b].append(values[np.logical_and(w, np.logical_not(o, out=o), out=w)])
    return [{} if brackets[j] is None else _proven(ms[j], above[j], inside[j], tied[j], brackets[j], absolute)
            for j in range(len(ms))]


def _proven(ms: Sequence[int], above: Sequence[int], inside: Sequence[list[np.ndarray]], tied: Sequence[int],
            brackets: Sequence[Bracket], absolute: bool) -> dict[int, Threshold]:
    """The thresholds that one tensor's counts prove (see :func:`_bracket_select`)."""
    found = {}
    for m, greater, parts_in, equal, (low, high) in zip(ms, above, inside, tied, brackets):
        if low == high:
            if greater < m <= greater + equal:  # proven: the m-th largest is the tied value
                found[m] = Threshold(m, float(high), greater, equal)
            continue
        members = np.concatenate(parts_in)
        if greater < m <= greater + members.size:  # proven: the m-th largest is inside
            ((t, more, equal),) = _largest(members, [m - greater], nonnegative=absolute)
            found[m] = Threshold(m, t, greater + more, equal)
    return found


def _count(mask: Tensor) -> int:
    """How many 1.0 entries a float mask holds: comparisons into float buffers and a float sum are ~3x
    faster on CPU than into bool and ``count_nonzero``; exact (counts above 2**24 are summed in float64)."""
    return int(mask.sum() if mask.numel() <= 1 << 24 else mask.sum(dtype=torch.float64))
