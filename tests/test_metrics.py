"""TIME metrics against hand-computed numbers, and the local `evaluate` accuracy module."""

import math

import pytest

from hf_time.errors import ConfigError
from hf_time.metrics import (
    backward_transfer,
    forgetting,
    geometric_mean,
    knowledge_accumulation,
    time_metrics,
    trajectory,
    zero_shot_retention,
)

ADAPT = ["A", "B", "C"]
HELD = ["H1", "H2"]
# Row t: the model deployed after training on ADAPT[t]. B starts at 0.95 zero-shot, above what it
# reaches after being trained (0.9), so forgetting (max over all earlier rows) and BWT differ.
ACC = [
    {"A": 0.8, "B": 0.95, "C": 0.4, "H1": 0.6, "H2": 0.7},
    {"A": 0.7, "B": 0.9, "C": 0.45, "H1": 0.55, "H2": 0.65},
    {"A": 0.6, "B": 0.8, "C": 0.95, "H1": 0.5, "H2": 0.6},
]


def test_final_metrics_by_hand():
    assert knowledge_accumulation(ACC[-1], ADAPT) == pytest.approx(2.35 / 3)
    assert zero_shot_retention(ACC[-1], HELD) == pytest.approx(0.55)
    assert geometric_mean(2.35 / 3, 0.55) == pytest.approx(0.6563795)
    # BWT: A 0.6 - 0.8, B 0.8 - 0.9 -> mean -0.15
    assert backward_transfer(ACC, ADAPT) == pytest.approx(-0.15)
    # forgetting: A max(0.8, 0.7) - 0.6 = 0.2, B max(0.95, 0.9) - 0.8 = 0.15 -> 0.175
    assert forgetting(ACC, ADAPT) == pytest.approx(0.175)


def test_time_metrics_and_trajectory():
    final = time_metrics(ACC, ADAPT, HELD)
    assert final.step == 3
    assert (final.a_ka, final.a_zs, final.bwt, final.forgetting) == pytest.approx((2.35 / 3, 0.55, -0.15, 0.175))
    assert final.geometric_mean == pytest.approx(math.sqrt(2.35 / 3 * 0.55))
    steps = trajectory(ACC, ADAPT, HELD)
    assert [m.step for m in steps] == [1, 2, 3]
    assert steps[0].a_ka == pytest.approx(2.15 / 3) and steps[0].a_zs == pytest.approx(0.65)
    assert math.isnan(steps[0].bwt) and math.isnan(steps[0].forgetting)
    assert steps[1].bwt == pytest.approx(-0.1) and steps[1].forgetting == pytest.approx(0.1)
    assert steps[-1] == final


def test_metric_input_errors():
    with pytest.raises(ConfigError):
        time_metrics([], ADAPT, HELD)
    with pytest.raises(ConfigError, match="4 accuracy rows"):
        backward_transfer(ACC + ACC[:1], ADAPT)
    assert math.isnan(time_metrics(ACC, ADAPT, []).geometric_mean)


def test_local_accuracy_module():
    from hf_time.evaluation import _accuracy_metric, compute_accuracy

    assert compute_accuracy([0, 1, 1, 2], [0, 1, 0, 0]) == 0.5
    metric = _accuracy_metric()
    assert metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], sample_weight=[1, 1, 2])["accuracy"] == 0.5
    assert metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], normalize=False)["accuracy"] == 2.0
