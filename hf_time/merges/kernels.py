"""Tensor kernels shared by the task-vector merge methods (one merge = one tensor name).

Everything here is a plain function of tensors. Functions whose name ends in ``_`` work in place on a
temporary that the caller allocated itself (the stacked task vectors); they are never given a
method's inputs, so merge methods stay pure.

The generalized task-arithmetic kernel (:func:`generalized_task_arithmetic`) follows mergekit's
``generalized_task_arithmetic`` semantics, so the presets (task arithmetic, TIES, DARE, Breadcrumbs)
are data over it: per expert τ_i = θ_i − θ_0 is sparsified (magnitude top-k, magnitude band or random
drop), multiplied by its weight w_i, optionally sign-elected (TIES "sum" rule: γ = sign Σ_i w_i τ_i,
with γ = + where the sum is 0), summed, optionally divided by the sum of the weights (of the entries
agreeing with γ when electing), scaled by λ and added to θ_0.

Conventions, and where they differ from mergekit:
* kept counts are ``int(density * numel)`` as in mergekit; a count of 0 keeps nothing (mergekit
  raises) and ``density >= 1`` leaves τ untouched (no sort, no RNG draw), as in mergekit.
* per-tensor trims keep exactly m entries (:func:`top_mask`, :func:`keep_magnitude_ranks_`: an exact
  selection, not a sort: numpy's partition or a sampled bracket on CPU, linear-time selections
  over the float bit patterns elsewhere, see :mod:`hf_time.merges.selection`; entries tied at the
  threshold are taken in index order), as mergekit does (it breaks ties by its sort order). A band
  (Breadcrumbs) is top(n_top + n_keep) minus top(n_top). Global thresholds are the absolute values
  the engine computed over the whole model at the fractions of :func:`topk_fractions` /
  :func:`band_fractions`; there an entry is kept when lo <= |τ| < hi, ties included.
* Breadcrumbs with ``int(gamma * numel) == 0`` drops no outlier; mergekit's slice ``[n_bot:-0]``
  drops the whole tensor there (small tensors), which we do not reproduce.
* DARE rescales survivors by 1/density (the DARE paper and mergekit before its l1 ``rescale_norm``);
  unbiased, so E[dare_linear] = task arithmetic.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from hf_time.merges.selection import (  # noqa: F401 (kth_largest, top_mask: re-exported)
    MagnitudeTrim,
    apply_trim_,
    keep_magnitude_between_,
    keep_magnitude_ranks_,
    kth_largest,
    top_mask,
)

DIVISOR_EPS = 1e-8  # |Σ w| below this is treated as 0 (mergekit's guard for the linear divisor)


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype merges compute in: float32 for bf16/fp16/fp32 inputs, float64 stays float64."""
    return torch.promote_types(t.dtype, torch.float32)


def task_vectors(base: Tensor, experts: Sequence[Tensor]) -> Tensor:
    """Stack τ_i = θ_i − θ_0 into one fresh ``(n, *shape)`` tensor (one allocation, inputs untouched).

    Inputs of any floating dtype are converted while being copied into the stack, so bf16
    checkpoints need no intermediate float32 copies. ``base`` should already be in the compute dtype.
    """
    out = torch.empty((len(experts), *base.shape), dtype=compute_dtype(base), device=base.device)
    for i, expert in enumerate(experts):
        out[i].copy_(expert)
    out.sub_(base)
    return out


def weight_vector(weights: Sequence[float], n: int, like: Tensor) -> Tensor:
    """The expert weights as a tensor broadcastable against a stacked ``(n, *shape)`` tensor.

    Raises:
        ValueError: the number of weights is not the number of experts.
    """
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} experts")
    return torch.tensor(weights, dtype=like.dtype, device=like.device).view(n, *([1] * (like.dim() - 1)))


def kept_count(fraction: float, numel: int) -> int:
    """How many entries a fraction keeps: ``int(fraction * numel)`` (mergekit's rounding), clamped."""
    return min(max(int(fraction * numel), 0), numel)


def topk_fractions(density: float) -> tuple[float, ...]:
    """The quantile of |τ| a top-``density`` trim needs (empty when nothing is trimmed)."""
    return () if density >= 1 else (1.0 - density,)


def band_fractions(density: float, gamma: float) -> tuple[float, float] | tuple[()]:
    """The quantiles (lo, hi) of |τ| bounding a Breadcrumbs band (empty when nothing is trimmed).

    The top ``gamma`` fraction is dropped, the next ``density`` fraction kept; when they add up to more
    than 1 fewer outliers are dropped so that ``density`` is still kept (mergekit's rule).
    """
    if density >= 1:
        return ()
    lo = max(0.0, 1.0 - gamma - density)
    return (lo, lo + density)


def magnitude_ranks(numel: int, density: float, gamma: float = 0.0) -> tuple[int, int]:
    """``(start, stop)``: a per-tensor trim keeps the entries of magnitude rank ``start+1 .. stop`` (1: the
    largest), ``int(density * numel)`` of them below the ``int(gamma * numel)`` largest outliers
    (Breadcrumbs; none for TIES). mergekit's rule: drop fewer outliers rather than keep less."""
    n_keep, n_top = kept_count(density, numel), kept_count(gamma, numel)
    n_top = min(n_top, numel - n_keep)
    return n_top, n_top + n_keep


def magnitude_trim(tv: Tensor, density: float, threshold: float | None = None, *,
                   minus: Tensor | None = None) -> MagnitudeTrim | None:
    """The top-``density`` magnitude trim of ``tv`` (None: everything is kept), to apply slice by slice.

    Args:
        tv: one whole task vector (read to find the per-tensor threshold, not modified), or θ_i when
            ``minus`` is θ_0 (the task vector is then never held whole, see :func:`thresholds`).
        density: fraction kept.
        threshold: the |τ| value to keep from (global scope); None computes the per-tensor one.
    """
    if density >= 1:
        return None
    if threshold is None:  # per tensor: exactly int(density * numel) entries (see top_mask)
        return MagnitudeTrim.ranks(tv, *magnitude_ranks(tv.numel(), density), minus=minus)
    return MagnitudeTrim.between(threshold)


def band_trim(tv: Tensor, density: float, gamma: float, thresholds: Sequence[float] | None = None, *,
              minus: Tensor | None = None) -> MagnitudeTrim | None:
    """Breadcrumbs: drop the top ``gamma`` magnitudes and everything below the next ``density``
    (None: everything is kept), to apply slice by slice.

    Args:
        tv: one whole task vector (read to find the per-tensor thresholds, not modified), or θ_i
            when ``minus`` is θ_0.
        thresholds: (lo, hi) absolute |τ| values for global scope; None computes the per-tensor ones.
    """
    if density >= 1:
        return None
    if thresholds is None:  # per tensor: exactly the entries ranked n_top+1 .. n_top+n_keep
        return MagnitudeTrim.ranks(tv, *magnitude_ranks(tv.numel(), density, gamma), minus=minus)
    lo, hi = thresholds
    if gamma <= 0:
        hi = math.inf  # no outliers to drop: the quantile 1.0 would be the max itself
    return MagnitudeTrim.between(lo, hi)


def trim_magnitude_(tv: Tensor, density: float, threshold: float | None = None) -> Tensor:
    """Zero the entries of ``tv`` outside its top-``density`` magnitudes (in place); see :func:`magnitude_trim`."""
    return apply_trim_(tv, magnitude_trim(tv, density, threshold))


def trim_band_(tv: Tensor, density: float, gamma: float, thresholds: Sequence[float] | None = None) -> Tensor:
    """Breadcrumbs trim of ``tv`` in place; see :func:`band_trim`."""
    return apply_trim_(tv, band_trim(tv, density, gamma, thresholds))


def random_drop_(tv: Tensor, density: float, generator: torch.Generator) -> Tensor:
    """DARE: keep each entry with probability ``density``, zero the rest (in place, no rescale)."""
    if density >= 1:
        return tv
    return tv.mul_(keep_mask(tv.shape, density, generator, device=tv.device))


def keep_mask(shape: int | Sequence[int], density: float, generator: torch.Generator, *,
              device: torch.device | str | None = None) -> Tensor:
    """DARE's mask: 1.0 where the next ``torch.rand`` draw of ``generator`` is below ``density``, else 0.0."""
    return torch.rand(shape, generator=generator, device=device or generator.device).lt_(density)


def elected_sign(weighted: Tensor) -> Tensor:
    """TIES election: the sign of Σ_i w_i τ_i as ±1.0 in ``weighted``'s dtype, + where the sum is >= 0.

    The comparison writes 1.0/0.0 in place into the fresh sum (no bool tensor, no dtype round trip).
    """
    return weighted.sum(0).ge_(0).mul_(2).sub_(1)


def agreeing_magnitudes_(tv: Tensor, sign: Tensor) -> Tensor:
    """|entry| where one weighted task vector agrees with the elected ``sign`` (±1), 0 elsewhere (in place).

    Multiplying by ±1 and clamping at 0 keeps exactly the agreeing, non-zero entries in two vectorised
    passes (a bool mask, an equality, a logical and and a multiply took five); the merged values are
    bit-identical, because the sum of agreeing magnitudes times ±1 is the sum of the agreeing values.
    """
    return tv.mul_(sign).clamp_min_(0)


def generalized_task_arithmetic(
    base: Tensor,
    tvs: Tensor,
    weights: Sequence[float],
    *,
    consensus: bool,
    normalize: bool,
    lambda_: float,
    scales: Sequence[float] | None = None,
) -> Tensor:
    """Combine already-sparsified task vectors onto ``base`` (consumes ``tvs``, a caller temporary).

    Args:
        base: θ_0.
        tvs: stacked sparsified task vectors ``(n, *shape)``; modified in place.
        weights: w_i (also the normalization weights).
        consensus: TIES sign election and disjoint combination.
        normalize: divide by Σ w_i (of agreeing entries with consensus; guarded against 0).
        lambda_: final scale of the merged task vector.
        scales: extra per-expert factors applied with the weights but not counted in the divisor
            (DARE's 1/density rescale).
    Returns:
        θ_0 + λ · merged, a fresh tensor.
    """
    n = tvs.shape[0]
    w = weight_vector(weights, n, tvs)
    factors = w if scales is None else w * weight_vector(scales, n, tvs)
    weighted = tvs if bool((factors == 1).all()) else tvs.mul_(factors)  # skip a full pass for unit weights
    if consensus:
        # One expert at a time: peak memory is the stack plus ~3 output-sized buffers, instead of an
        # (n, *shape) float agreement tensor. Every mask is float 1.0/0.0 (bool masks and mixed-dtype
        # arithmetic leave torch's vectorized CPU paths); the values are those of the bool versions.
        sign = elected_sign(weighted)
        mixed = torch.zeros_like(sign)  # Σ of agreeing magnitudes; times the sign at the end
        uniform = len(set(weights)) == 1 and n < 256
        divisor = agree = None
        if normalize:  # with equal weights Σ_agreeing w = w·count: count, then divide by w once
            divisor, agree = torch.zeros_like(sign), torch.empty_like(sign)
        for i in range(n):
            magnitudes = agreeing_magnitudes_(weighted[i], sign)
            mixed.add_(magnitudes)
            if divisor is not None:
                torch.gt(magnitudes, 0, out=agree)  # 1.0 where expert i agrees (a non-zero entry)
                if uniform:
                    divisor.add_(agree)
                else:
                    divisor.add_(agree, alpha=float(weights[i]))
        mixed.mul_(sign)
        if divisor is not None:
            # no agreeing expert: divide by 1 (counts are whole numbers, so clamping is that fill)
            mixed.div_(divisor.clamp_min_(1) if uniform else divisor.masked_fill_(divisor == 0, 1))
            if uniform and weights[0] not in (0, 1):
                mixed.div_(float(weights[0]))
    else:
        mixed = weighted.sum(0)
        if normalize:
            total = float(sum(weights))
            mixed.div_(total if abs(total) >= DIVISOR_EPS else 1.0)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed.add_(base)


def all_finite(t: Tensor) -> bool:
    """Whether every element of ``t`` is finite (no NaN, no ±Inf), exactly.

    A NaN or Inf element makes the sum non-finite, so a finite sum proves the tensor finite in one
    vectorized pass without allocating a mask (~25x faster than ``isfinite(t).all()`` on CPU); only
    a non-finite sum (a bad element, or finite values that overflow when added) takes the exact check.
    """
    if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def weighted_sum(tensors: Sequence[Tensor], coefs: Sequence[float], *, start: Tensor | None = None,
                 start_coef: float = 1.0) -> Tensor:
    """``start_coef·start + Σ c_i·t_i``, accumulated in ONE fresh buffer of at least float32 precision.

    Inputs may have any floating dtype (bf16 checkpoints are read as is): each is converted inside
    one reused scratch buffer and added in place; nothing is stacked, so memory is two output-sized
    buffers whatever the number of experts. This is what makes task arithmetic and linear merges memory-bound only.
    """
    first, rest, rest_coefs = (start, tensors, coefs) if start is not None else (tensors[0], tensors[1:], coefs[1:])
    c0 = start_coef if start is not None else coefs[0]
    dtype = torch.promote_types(first.dtype, torch.float32)  # bf16/fp16 in, float32 out; float64 stays
    out = torch.empty(first.shape, dtype=dtype, device=first.device).copy_(first)
    if c0 != 1:
        out.mul_(c0)
    scratch = None
    for t, c in zip(rest, rest_coefs):
        if t.dtype != dtype:
            # Converting into a reused scratch buffer and adding in float32 is ~1.5x faster on CPU than
            # torch's mixed-dtype add_ (which casts element by element outside the vectorized path).
            scratch = torch.empty_like(out) if scratch is None else scratch
            t = scratch.copy_(t)
        out.add_(t, alpha=c)
    return out
