"""Metrics: TIME's accuracy-matrix metrics (pure functions) and local `evaluate` modules.

``ACCURACY_MODULE`` is the folder of a local `evaluate` metric script; load it with
``evaluate.load(str(ACCURACY_MODULE))``. Canonical names such as ``evaluate.load("accuracy")`` would
need the network, so hf_time never uses them.
"""

from pathlib import Path

from hf_time.metrics.time_metrics import (
    TimeMetrics,
    backward_transfer,
    forgetting,
    geometric_mean,
    knowledge_accumulation,
    time_metrics,
    trajectory,
    zero_shot_retention,
)

ACCURACY_MODULE = Path(__file__).parent / "accuracy"

__all__ = [
    "ACCURACY_MODULE",
    "TimeMetrics",
    "backward_transfer",
    "forgetting",
    "geometric_mean",
    "knowledge_accumulation",
    "time_metrics",
    "trajectory",
    "zero_shot_retention",
]
