"""Timeline state: one dataclass, saved as JSON after every step, locally and in every snapshot commit.

The state holds what the next step and a report need and nothing that varies between two runs of
the same config: the config, the keys, the Hub references of every published node, the accuracy
rows and the sequential fold state. Wall-clock timings live in a separate local file
(:data:`TIMINGS_FILE`), so a resumed run publishes byte-identical snapshots to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hf_time.atomic import atomic_write_text
from hf_time.metrics import time_metrics, trajectory

STATE_FILE = "timeline_state.json"
TIMINGS_FILE = "timings.json"
FORMAT = 1


@dataclass(frozen=True)
class NodeRecord:
    """Where one node of the DAG lives: its kind, step, key and pinned Hub reference (with the tag)."""

    kind: str
    step: int
    key: str
    repo_id: str | None = None
    sha: str | None = None
    tag: str | None = None

    @property
    def label(self) -> str:
        return "base" if self.kind == "base" else f"{self.kind}-{self.step}"

    @property
    def pinned(self) -> str | None:
        return f"{self.repo_id}@{self.sha}" if self.repo_id and self.sha else None


@dataclass(frozen=True)
class StepRecord:
    """One completed step.

    Attributes:
        step: 1-based step number.
        task: the task trained at this step.
        key: the step's content key.
        init: the node the expert trained from.
        expert: the expert.
        deployed: the node deployed after this step (published as ``{repo}@step-{step}``).
        accuracy: task name -> test accuracy of the deployed model (adaptation and held-out tasks).
        training: deterministic facts of the expert's training (steps, tokens, losses), if known.
    """

    step: int
    task: str
    key: str
    init: NodeRecord
    expert: NodeRecord
    deployed: NodeRecord
    accuracy: Mapping[str, float]
    training: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TimelineState:
    """Everything a timeline has done so far.

    Attributes:
        repo_id: the timeline repo (``{namespace}/{name}``).
        config: the timeline config as plain data.
        base: the base node, pinned.
        adaptation_tasks, held_out_tasks: task names, in order.
        base_accuracy: accuracy of θ_0 on every task (the zero-shot row, not a step).
        steps: the completed steps, in order.
        fold_state: state of the sequential chain after the last step (None for dense techniques).
        format: the state format version.
    """

    repo_id: str
    config: Mapping[str, Any]
    base: NodeRecord
    adaptation_tasks: tuple[str, ...]
    held_out_tasks: tuple[str, ...]
    base_accuracy: Mapping[str, float]
    steps: tuple[StepRecord, ...] = ()
    fold_state: Mapping[str, Any] | None = None
    format: int = FORMAT

    # -- views -------------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return len(self.steps)

    def accuracy_matrix(self) -> list[dict[str, float]]:
        """acc[t][task]: row t (0-based) is the model deployed after step t + 1."""
        return [dict(s.accuracy) for s in self.steps]

    def metrics(self) -> list[dict[str, float]]:
        """TIME metrics (A_KA, A_ZS, GM, BWT, forgetting) after every step so far."""
        rows = trajectory(self.accuracy_matrix(), self.adaptation_tasks, self.held_out_tasks)
        return [_json_safe(dataclasses.asdict(m)) for m in rows]

    def final_metrics(self) -> dict[str, float | None] | None:
        """The metrics after the last step (None before step 1); undefined values are None."""
        if not self.steps:
            return None
        return _json_safe(dataclasses.asdict(time_metrics(self.accuracy_matrix(), self.adaptation_tasks, self.held_out_tasks)))

    def with_step(self, record: StepRecord, fold_state: Mapping[str, Any] | None) -> "TimelineState":
        if record.step != self.done + 1:
            raise ValueError(f"step {record.step} cannot follow step {self.done}")
        return dataclasses.replace(self, steps=(*self.steps, record), fold_state=fold_state)

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TimelineState":
        if data.get("format") != FORMAT:
            raise ValueError(f"timeline state format {data.get('format')!r} is not {FORMAT}; upgrade hf_time")
        steps = tuple(StepRecord(**{**s, "init": NodeRecord(**s["init"]), "expert": NodeRecord(**s["expert"]),
                                    "deployed": NodeRecord(**s["deployed"])}) for s in data["steps"])
        return cls(**{**data, "base": NodeRecord(**data["base"]), "steps": steps,
                      "adaptation_tasks": tuple(data["adaptation_tasks"]), "held_out_tasks": tuple(data["held_out_tasks"])})

    def to_json(self) -> str:
        """The state as the JSON text of ``timeline_state.json`` (keys sorted: the same state, the same bytes)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state as JSON atomically (a killed run never leaves half a state file)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TimelineState":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    # BWT and forgetting are undefined (nan) after one step; JSON has no nan, so they become null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
