"""Cache-sized slices of one CPU tensor operation, run on every core by Python threads.

Torch runs each CPU op on all its intra-op threads, forking and joining them once per op. For the
cache-sized slices the merges work on (:data:`hf_time.merges.bitselect.SLICE` entries), that fork and
join is a large part of each op. Dealing the slices of a tensor out to one thread per core, each
running torch ops single-threaded, uses the cores without that cost (torch and numpy release the GIL
inside their ops). Slices are dealt round-robin, so the cores walk through the tensor side by side:
in runs alternating with the one-thread loop, this cut a 1B task-arithmetic merge by 20-25%, where
one contiguous block per core cut it by 0-15% (figures: ``benchmarks/README.md``).

Only independent slices belong here: each thread has its own scratch buffers, results come back in
slice order, and the output is bit-identical to one thread walking the slices. (Tried and measured
slower on 2 cores: the ~40 small ops per slice of a TIES combine, and the counting passes that rank a
task vector; both stay on the calling thread.)

:func:`ahead` is the other shape of parallel work: serial streams (DARE's random draws, each from its
own expert's generator, which must yield its numbers in order) produced on threads while the calling
thread consumes them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch

R = TypeVar("R")
Span = tuple[int, int]

_lock = threading.Lock()  # one parallel section at a time sets torch's (process-wide) thread count
# The threads that run the hands, kept for the process: a merge calls :func:`map_hands` once per tensor, and
# starting fresh threads each time cost ~0.2 ms per call on 2 cores, ~1 ms with 16 hands (one process
# started 1,310 threads for one 271M merge on a 16-core machine). Used under ``_lock`` only.
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def count() -> int:
    """How many threads share CPU work out: torch's intra-op thread count (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``), so a user who limits torch limits this too."""
    return max(1, torch.get_num_threads())


def deal(spans: Sequence[Span], k: int) -> list[list[Span]]:
    """``spans`` dealt round-robin into at most ``k`` hands (none empty, so none for no spans)."""
    k = min(max(k, 1), len(spans))
    return [list(spans[i::k]) for i in range(k)]


def _threads(n: int) -> ThreadPoolExecutor:
    """The process's pool, with room for ``n`` hands at once (replaced by a larger one when needed)."""
    global _pool, _pool_size
    if _pool is None or _pool_size < n:
        if _pool is not None:
            _pool.shutdown(wait=False)  # idle: every hand of the last call has finished
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="hf_time-slices"), n
    return _pool


def _after_fork_in_child() -> None:
    """A forked child (dataset workers) has none of its parent's threads, and a lock held by one of them
    at the fork would never be released: start over."""
    global _lock, _pool, _pool_size
    _lock, _pool, _pool_size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def _single_threaded_ops() -> Iterator[None]:
    with _lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def map_hands(spans: Sequence[Span], work: Callable[[Sequence[Span]], R], *, workers: int | None = None) -> list[R]:
    """``work(hand)`` for each hand of ``spans`` (:func:`deal`, one per core), results in hand order.

    With one hand (one core, or a single span) it runs on the calling thread, with torch as it is.
    The first hand's error in hand order is raised, after every hand has finished.
    """
    hands = deal(spans, count() if workers is None else workers)
    if len(hands) <= 1:
        return [work(h) for h in hands]
    with _single_threaded_ops():
        pool = _threads(len(hands))
        futures = [pool.submit(work, h) for h in hands]
        wait(futures)  # every hand, failed or not, finishes before the lock is released
        return [f.result() for f in futures]


_DONE = object()  # a stream's end, in its queue


class _Raised:
    """A producer's exception, carried through the queue to be raised where the stream is consumed."""

    def __init__(self, error: BaseException):
        self.error = error


@contextlib.contextmanager
def ahead(streams: Sequence[Iterable[R]], *, depth: int = 2) -> Iterator[list[Iterator[R]]]:
    """Each stream produced on a thread of its own while the caller consumes it: one iterator per stream.

    For streams that are serial by nature, each item depending on the last, but independent of one
    another: DARE's random draws, slice by slice from each expert's own generator. Every stream yields
    exactly its items in its order, so results are those of consuming the streams on the calling thread.
    At most ``depth`` items of a stream wait to be consumed; torch runs single-threaded on every thread
    meanwhile (one thread per stream, more than one core each would oversubscribe them). With one core,
    or no stream, the streams are consumed on the calling thread as they are.

    A producer's error is raised where its stream reaches it; leaving the block early (an error in the
    caller) stops every producer before it returns.
    """
    if not streams or count() == 1:
        yield [iter(s) for s in streams]
        return
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in streams]

    def produce(stream: Iterable[R], out: queue.Queue) -> None:
        items = iter(stream)
        try:
            while not stop.is_set():  # checked before each item: nothing is made once the block is left
                item = next(items, _DONE)
                out.put(item)
                if item is _DONE:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            out.put(_Raised(error))

    def consume(out: queue.Queue) -> Iterator[R]:
        while (item := out.get()) is not _DONE:
            if isinstance(item, _Raised):
                raise item.error
            yield item

    with _single_threaded_ops():
        pool = _threads(len(streams))
        futures = [pool.submit(produce, s, q) for s, q in zip(streams, queues)]
        try:
            yield [consume(q) for q in queues]
        finally:
            stop.set()
            while not all(f.done() for f in futures):  # a producer blocked on a full queue gets room to see `stop`
                for q in queues:
                    with contextlib.suppress(queue.Empty):
                        while True:
                            q.get_nowait()
                wait(futures, timeout=0.01)
