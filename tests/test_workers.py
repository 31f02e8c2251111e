"""Slices dealt out to every core (hf_time.merges.workers): order, errors and torch's thread count."""

from __future__ import annotations

import threading

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
