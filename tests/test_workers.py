"""Slices dealt out to every core (hf_time.merges.workers): order, errors and torch's thread count."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch

from hf_time.merges import workers


def test_slices_are_dealt_round_robin_each_once():
    spans = [(i, i + 1) for i in range(7)]
    hands = workers.deal(spans, 3)
    assert hands == [[(0, 1), (3, 4), (6, 7)], [(1, 2), (4, 5)], [(2, 3), (5, 6)]]
    assert workers.deal(spans[:2], 8) == [[(0, 1)], [(1, 2)]]  # never an empty hand
    assert workers.deal([], 4) == []


def test_results_come_back_in_hand_order_from_threads_with_single_threaded_torch(monkeypatch):
    monkeypatch.setattr(workers, "count", lambda: 3)
    seen = []

    def work(hand):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return [lo for lo, _ in hand]

    before = torch.get_num_threads()
    assert workers.map_hands([(i, i + 1) for i in range(7)], work) == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(seen) == 3 and all(name.startswith("hf_time-slices") and n == 1 for name, n in seen)
    assert torch.get_num_threads() == before


def test_one_hand_runs_on_the_calling_thread_with_torch_untouched():
    threads = []
    workers.map_hands([(0, 5)], lambda hand: threads.append((threading.current_thread(), torch.get_num_threads())),
                      workers=4)
    assert threads == [(threading.current_thread(), torch.get_num_threads())]


def test_the_first_failing_hand_in_order_is_raised_and_torch_threads_are_restored():
    before = torch.get_num_threads()
    finished = []

    def work(hand):
        first = hand[0][0]
        if first in (1, 2):
            raise ValueError(f"hand from {first}")
        finished.append(first)

    with pytest.raises(ValueError, match="hand from 1"):
        workers.map_hands([(i, i + 1) for i in range(6)], work, workers=3)
    assert finished == [0]  # the other hands ran to their end before the error was raised
    assert torch.get_num_threads() == before


def test_the_threads_are_kept_across_calls_and_added_when_more_hands_come():
    def threads(k):
        meet = threading.Barrier(k, timeout=10)  # every hand on a thread of its own

        def work(hand):
            meet.wait()
            return threading.current_thread()

        return set(workers.map_hands([(i, i + 1) for i in range(k)], work, workers=k))

    first = threads(3)
    assert len(first) == 3 and threads(3) == first  # the same threads, not fresh ones
    assert len(threads(5)) == 5


def test_a_failed_hand_is_raised_only_once_every_other_hand_has_finished():
    finished = []

    def work(hand):
        if hand[0][0] == 0:
            raise ValueError("first hand")
        time.sleep(0.2)
        finished.append(hand[0][0])

    with pytest.raises(ValueError, match="first hand"):
        workers.map_hands([(i, i + 1) for i in range(3)], work, workers=3)
    assert sorted(finished) == [1, 2]


def _child(conn):
    conn.send(workers.map_hands([(i, i + 1) for i in range(4)], lambda hand: threading.current_thread().name,
                                workers=2))
    conn.close()


def test_a_forked_child_starts_its_own_threads():
    meet = threading.Barrier(2, timeout=10)  # the parent's pool has two threads, both idle at the fork
    workers.map_hands([(0, 1), (1, 2)], lambda hand: meet.wait(), workers=2)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,))
    proc.start()
    try:
        assert parent.poll(30), "the child's map_hands hung on the parent's threads"
        got = parent.recv()
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0 and len(got) == 2 and all(name.startswith("hf_time-slices") for name in got)


def test_ahead_streams_come_in_order_each_produced_on_its_own_single_threaded_thread(monkeypatch):
    monkeypatch.setattr(workers, "count", lambda: 2)
    produced = []

    def stream(k):
        for i in range(5):
            produced.append((k, threading.current_thread().name, torch.get_num_threads()))
            yield (k, i)

    before = torch.get_num_threads()
    with workers.ahead([stream(0), stream(1), stream(2)], depth=1) as its:
        assert torch.get_num_threads() == 1  # the consumer too: every core is someone's
        got = [[next(it) for _ in range(5)] for it in reversed(its)]  # any consumption order works
        assert all(next(it, "end") == "end" for it in its)
    assert got == [[(k, i) for i in range(5)] for k in (2, 1, 0)]
    names = {k: {name for j, name, _ in produced if j == k} for k in range(3)}
    assert all(len(n) == 1 and next(iter(n)).startswith("hf_time-slices") for n in names.values())
    assert len(set.union(*names.values())) == 3 and {t for *_, t in produced} == {1}
    assert torch.get_num_threads() == before


def test_ahead_on_one_core_consumes_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(workers, "count", lambda: 1)
    here = threading.current_thread()
    seen = []

    def stream():
        seen.append(threading.current_thread())
        yield 1

    with workers.ahead([stream()]) as (it,):
        assert list(it) == [1]
    assert seen == [here]


def test_a_producers_error_is_raised_where_its_stream_reaches_it(monkeypatch):
    monkeypatch.setattr(workers, "count", lambda: 2)

    def stream():
        yield 1
        raise ValueError("draw 2 failed")

    with workers.ahead([stream(), iter([7, 8])]) as (bad, good):
        assert next(bad) == 1 and list(good) == [7, 8]
        with pytest.raises(ValueError, match="draw 2 failed"):
            next(bad)


def test_leaving_ahead_early_stops_producers_blocked_on_a_full_queue(monkeypatch):
    monkeypatch.setattr(workers, "count", lambda: 2)
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="consumer failed"), workers.ahead([endless(), endless()], depth=2) as (a, _):
        assert next(a) == 0
        time.sleep(0.1)  # both producers now wait on full queues
        raise RuntimeError("consumer failed")
    settled = len(made)
    time.sleep(0.1)
    assert len(made) == settled <= 2 * (2 + 2)  # nothing once the block is left: depth + 1 consumed + 1 in put
    assert torch.get_num_threads() == before
    assert workers.map_hands([(0, 1), (1, 2)], lambda hand: hand[0][0], workers=2) == [0, 1]  # the lock is free
