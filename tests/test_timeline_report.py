"""Issue 10.3: the timeline's tables carry full names (the matrix header used to read ``movie_sentim``,
the step column ``step 3 (movie_sentiment`` and the timings ``push_exp``)."""

from __future__ import annotations

from hf_time.timeline.report import format_matrix, format_timings
from hf_time.timeline.runner import StepTimings
from hf_time.timeline.state import NodeRecord, StepRecord, TimelineState

TASKS = ("movie_sentiment", "sms_spam")
HELD = ("tweet_sentiment",)


def _state() -> TimelineState:
    acc = {"movie_sentiment": 0.8, "sms_spam": 0.9, "tweet_sentiment": 0.6}
    node = NodeRecord("expert", 1, "k" * 64)
    steps = tuple(StepRecord(i, t, f"s{i}", node, node, node, acc) for i, t in enumerate(TASKS, 1))
    return TimelineState("demo/t", {}, NodeRecord("base", 0, "b" * 64), TASKS, HELD, acc, steps)


def test_matrix_has_full_task_names_and_aligned_columns():
    lines = format_matrix(_state()).splitlines()
    header = lines[0].split()
    assert header == ["deployed", "after", "movie_sentiment", "sms_spam", "tweet_sentiment*", "A_KA", "A_ZS", "GM"]
    assert lines[2].startswith("step 1 (movie_sentiment) ") and lines[3].startswith("step 2 (sms_spam) ")
    assert len({len(line) for line in lines[:4]}) == 1  # every row as wide as the header
    # each number ends under the end of its column's name
    assert lines[0].index("movie_sentiment") + len("movie_sentiment") == lines[1].index("0.800") + len("0.800")


def test_timings_have_full_phase_names():
    t = StepTimings(1, wall=10.0, tokens=1000, train_loop=2.0)
    t.phases.update(train=5.0, push_expert=1.0)
    text = format_timings([t], StepTimings(0, wall=1.0))
    header = text.splitlines()[0].split()
    assert header == ["step", "wall", "s", "resolve", "train", "push_expert", "merge", "evaluate", "card", "publish",
                      "state", "tok/s", "overhead"]
    assert text.splitlines()[1].split()[0] == "setup"
