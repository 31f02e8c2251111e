"""The examples of every training step, planned up front: current task plus replay, seeded.

Shared by the encoder trainer (:mod:`hf_time.training`) and the causal-LM trainer
(:mod:`hf_time.lm_training`): both feed the planned batches in order, so the replay mix of every
batch is exactly as planned, and the plan depends only on the data and the seed.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")


def epochs(items: Sequence[T], rng: random.Random) -> Iterator[T]:
    """Endless shuffled passes over ``items`` (every item once per pass)."""
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        yield from (items[i] for i in order)


def mix_batches(current: Sequence[T], past: Sequence[T], *, batch_size: int, steps: int, replay_fraction: float,
                seed: int) -> list[list[T]]:
    """``steps`` batches of ``batch_size``: ``round(batch_size · replay_fraction)`` from ``past`` (when
    it is not empty), the rest from ``current``, each batch shuffled; seeded epochs over both pools."""
    n_past = round(batch_size * replay_fraction) if past else 0
    rng = random.Random(f"batches:{seed}")
    streams = [epochs(current, rng), epochs(past, rng) if past else iter(())]
    batches = []
    for _ in range(steps):
        batch = [next(streams[0]) for _ in range(batch_size - n_past)] + [next(streams[1]) for _ in range(n_past)]
        rng.shuffle(batch)
        batches.append(batch)
    return batches
