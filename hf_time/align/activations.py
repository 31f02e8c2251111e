"""Activations of two models on the same texts, reduced to the moments the data-aware methods need.

Activation matching, ZipIt! and PLeaS compare what units *do* on data: both models read the same
token batches, forward hooks capture the features of every slot (the residual stream after the
embeddings and after each block, the MLP hidden activations, the attention projections and the
per-head context that ``o_proj`` reads), padding positions are dropped, and
:class:`CrossMoments` accumulates sums, squares and the cross products from which correlations
follow. Nothing here reads files: models, tokenizers and texts come from the caller.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from hf_time.align.spec import ArchSpec
from hf_time.errors import ConfigError

Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Point:
    """Where a slot's features are read: a module's output, or its first input."""

    module: str
    side: str  # "out" or "in"


def matching_points(spec: ArchSpec, *, qk: bool | None = None) -> dict[str, Point]:
    """The capture points of every slot: ``res.-1`` (after the embeddings), ``res.L`` (after block L),
    ``mlp.L``, ``v.L``, ``o.L`` and, when Q/K dims may be permuted (or ``qk``), ``q.L`` and ``k.L``."""
    qk = spec.attention.qk_free if qk is None else qk
    points = {"res.-1": Point(spec.embed_module, "out")}
    for i, m in enumerate(spec.modules):
        points[f"res.{i}"] = Point(m.block, "out")
        points[f"mlp.{i}"] = Point(m.mlp, "in")
        points[f"v.{i}"] = Point(m.v, "out")
        points[f"o.{i}"] = Point(m.o, "in")
        if qk:
            points[f"q.{i}"] = Point(m.q, "out")
            points[f"k.{i}"] = Point(m.k, "out")
    return points


@contextmanager
def capture(model: nn.Module, points: Mapping[str, Point]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks filling the yielded dict with each point's features [batch, tokens, n] per forward."""
    modules = dict(model.named_modules())
    missing = sorted({p.module for p in points.values()} - set(modules))
    if missing:
        raise ConfigError(f"the model has no module {missing[0]!r}; it does not match its config's architecture")
    found: dict[str, torch.Tensor] = {}
    handles = []
    by_module: dict[str, list[tuple[str, str]]] = {}
    for name, p in points.items():
        by_module.setdefault(p.module, []).append((name, p.side))

    def hook(names):
        def run(_module, args, output):
            for name, side in names:
                value = args[0] if side == "in" else (output[0] if isinstance(output, tuple) else output)
                found[name] = value.detach()
        return run

    for module, names in by_module.items():
        handles.append(modules[module].register_forward_hook(hook(names)))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def features(model: nn.Module, batch: Batch, points: Mapping[str, Point]) -> dict[str, torch.Tensor]:
    """Every point's features of the real tokens of ``batch``, as [tokens, n] float64."""
    base = getattr(model, "base_model", model)  # the body only: a task or LM head adds nothing to capture
    keep = batch["attention_mask"].reshape(-1).bool()
    with capture(model, points) as found, torch.no_grad():
        base(**batch)
    return {name: v.reshape(-1, v.shape[-1])[keep].to(torch.float64) for name, v in found.items()}


@dataclass
class CrossMoments:
    """Running moments of two feature sets observed on the same tokens.

    Attributes:
        full: also keep the within-model second moments (ZipIt! merges features of one model too).
    """

    n_a: int
    n_b: int
    full: bool = False
    count: int = 0
    sum_a: torch.Tensor = field(init=False)
    sum_b: torch.Tensor = field(init=False)
    sq_a: torch.Tensor = field(init=False)
    sq_b: torch.Tensor = field(init=False)
    ab: torch.Tensor = field(init=False)
    aa: torch.Tensor | None = field(init=False, default=None)
    bb: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.sum_a, self.sum_b, self.sq_a, self.sq_b = z(self.n_a), z(self.n_b), z(self.n_a), z(self.n_b)
        self.ab = z(self.n_a, self.n_b)
        if self.full:
            self.aa, self.bb = z(self.n_a, self.n_a), z(self.n_b, self.n_b)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add tokens: ``a`` [N, n_a] and ``b`` [N, n_b] (row t of both is the same token)."""
        self.count += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += (a * a).sum(0)
        self.sq_b += (b * b).sum(0)
        self.ab += a.T @ b
        if self.full:
            self.aa += a.T @ a
            self.bb += b.T @ b

    def _std(self, s: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        mean = s / self.count
        return (sq / self.count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-8)

    def correlation(self) -> torch.Tensor:
        """Pearson correlation [n_a, n_b] of every feature of A with every feature of B."""
        ma, mb = self.sum_a / self.count, self.sum_b / self.count
        cov = self.ab / self.count - ma[:, None] * mb[None, :]
        return (cov / (self._std(self.sum_a, self.sq_a)[:, None] * self._std(self.sum_b, self.sq_b)[None, :])).float()

    def joint_correlation(self) -> torch.Tensor:
        """Correlation [(n_a+n_b)², ...] of the concatenated features [A, B] (needs ``full``)."""
        if not self.full:
            raise ValueError("joint_correlation needs CrossMoments(full=True)")
        mean = torch.cat([self.sum_a, self.sum_b]) / self.count
        second = torch.cat([torch.cat([self.aa, self.ab], 1), torch.cat([self.ab.T, self.bb], 1)], 0) / self.count
        cov = second - mean[:, None] * mean[None, :]
        std = torch.cat([self._std(self.sum_a, self.sq_a), self._std(self.sum_b, self.sq_b)])
        return (cov / (std[:, None] * std[None, :])).float()


def moments(models: tuple[nn.Module, nn.Module], batches: Iterable[Batch], points: Mapping[str, Point], *,
            full: Sequence[str] = (), progress=None) -> dict[str, CrossMoments]:
    """Run both models on every batch and accumulate :class:`CrossMoments` per point.

    Args:
        models: (reference, expert), in eval mode.
        batches: token batches (``input_ids``, ``attention_mask``...), the same for both models.
        points: what to capture (:func:`matching_points`).
        full: points whose within-model moments are kept too.
        progress: an optional callable wrapping the batch iterable (a tqdm).
    """
    stats: dict[str, CrossMoments] = {}
    for batch in (progress(batches) if progress else batches):
        fa, fb = features(models[0], batch, points), features(models[1], batch, points)
        for name in points:
            if name not in stats:
                stats[name] = CrossMoments(fa[name].shape[1], fb[name].shape[1], full=name in full)
            stats[name].update(fa[name], fb[name])
    if not stats:
        raise ConfigError("no data: activation statistics need at least one batch of texts")
    return stats


def sample_texts(tasks: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` training texts spread evenly over built-in ``tasks`` (deterministic for a seed).

    Raises:
        ConfigError: no task given (activation methods need data).
        UnknownTaskError, TaskDataNotFoundError: a task that does not exist or is not installed.
    """
    from hf_time.tasks import load_task

    if not tasks:
        raise ConfigError("activation statistics need data: pass --task NAME (a built-in task, see `hf-time tasks`)")
    rng = random.Random(seed)
    texts: list[str] = []
    for i, name in enumerate(tasks):
        share = n // len(tasks) + (1 if i < n % len(tasks) else 0)
        pool = list(load_task(name, seed=seed).train["text"])
        texts += rng.sample(pool, min(share, len(pool)))
    return texts


def token_batches(tokenizer, texts: Sequence[str], *, batch_size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """``texts`` tokenised into padded batches (``input_ids``, ``attention_mask``; single-segment texts need no
    ``token_type_ids``, which decoders would not accept)."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i: i + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out
