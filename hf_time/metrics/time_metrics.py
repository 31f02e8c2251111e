"""TIME metrics over an accuracy matrix, as pure functions (methods.md §1).

The matrix is a sequence of rows, one per adaptation step: ``acc[t][task]`` is the accuracy of the
model deployed after step ``t + 1`` (0-based row ``t`` follows training on ``adaptation_tasks[t]``)
on ``task``. Rows map task names to accuracies in [0, 1]; every row must cover the tasks a metric
reads. The base model (before step 1) is not a row: report it separately.

Backward transfer and forgetting need at least two rows; with fewer they are ``nan`` (undefined),
not 0, so a caller cannot mistake "nothing measured yet" for "nothing forgotten".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from hf_time.errors import ConfigError

Row = Mapping[str, float]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _check(acc: Sequence[Row], adaptation_tasks: Sequence[str]) -> None:
    if len(acc) > len(adaptation_tasks):
        raise ConfigError(f"{len(acc)} accuracy rows for only {len(adaptation_tasks)} adaptation tasks")


def knowledge_accumulation(row: Row, adaptation_tasks: Sequence[str]) -> float:
    """A_KA: mean accuracy over all adaptation tasks, seen and not yet seen."""
    return _mean([row[task] for task in adaptation_tasks])


def zero_shot_retention(row: Row, held_out_tasks: Sequence[str]) -> float:
    """A_ZS: mean accuracy over the held-out tasks never trained on."""
    return _mean([row[task] for task in held_out_tasks])


def geometric_mean(a_ka: float, a_zs: float) -> float:
    """sqrt(A_KA · A_ZS), TIME's single summary number."""
    return math.sqrt(a_ka * a_zs)


def backward_transfer(acc: Sequence[Row], adaptation_tasks: Sequence[str]) -> float:
    """BWT = mean over tasks j trained before the last step of acc[T, j] − acc[j, j].

    Negative values mean the latest model lost accuracy on tasks it had learnt.
    """
    _check(acc, adaptation_tasks)
    last = len(acc) - 1
    return _mean([acc[last][adaptation_tasks[j]] - acc[j][adaptation_tasks[j]] for j in range(last)])


def forgetting(acc: Sequence[Row], adaptation_tasks: Sequence[str]) -> float:
    """Mean over tasks j trained before the last step of max_{t<T} acc[t, j] − acc[T, j].

    As in Chaudhry et al. (2018) the maximum runs over every earlier row, including rows before task
    j was trained (its zero-shot accuracy), so losing zero-shot knowledge counts as forgetting.
    """
    _check(acc, adaptation_tasks)
    last = len(acc) - 1
    drops = [max(acc[t][adaptation_tasks[j]] for t in range(last)) - acc[last][adaptation_tasks[j]] for j in range(last)]
    return _mean(drops)


@dataclass(frozen=True)
class TimeMetrics:
    """The TIME metrics of the model deployed after the last row of an accuracy matrix."""

    step: int
    a_ka: float
    a_zs: float
    geometric_mean: float
    bwt: float
    forgetting: float


def time_metrics(acc: Sequence[Row], adaptation_tasks: Sequence[str], held_out_tasks: Sequence[str]) -> TimeMetrics:
    """All TIME metrics after the last row of ``acc`` (step ``len(acc)``).

    Args:
        acc: accuracy rows, one per step done so far (see the module docstring).
        adaptation_tasks: the tasks of the timeline, in training order.
        held_out_tasks: tasks never trained on.

    Raises:
        ConfigError: no rows, or more rows than adaptation tasks.
    """
    if not acc:
        raise ConfigError("the accuracy matrix has no rows yet")
    _check(acc, adaptation_tasks)
    a_ka = knowledge_accumulation(acc[-1], adaptation_tasks)
    a_zs = zero_shot_retention(acc[-1], held_out_tasks)
    gm = geometric_mean(a_ka, a_zs) if held_out_tasks else float("nan")
    return TimeMetrics(len(acc), a_ka, a_zs, gm, backward_transfer(acc, adaptation_tasks), forgetting(acc, adaptation_tasks))


def trajectory(acc: Sequence[Row], adaptation_tasks: Sequence[str], held_out_tasks: Sequence[str]) -> list[TimeMetrics]:
    """The metrics after every step: ``[time_metrics(acc[:1]), time_metrics(acc[:2]), ...]``."""
    return [time_metrics(acc[: t + 1], adaptation_tasks, held_out_tasks) for t in range(len(acc))]
