"""What an hf_time snapshot says about itself, read from one commit of a repo.

A snapshot commit may hold ``hf_time.json`` (the :class:`hf_time.lineage.Lineage`: what was done, to
which pinned inputs, with which parameters; a timeline snapshot adds a ``timeline`` section with its
``step``, the ``accuracy`` rows and the TIME ``metrics``), ``timeline_state.json`` (task order, which
tasks are held out) and a card whose ``model-index`` holds evaluation results. Pages show what is
there and say what is missing or unreadable; they never guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hf_time.errors import ConfigError
from hf_time.lineage import LINEAGE_FILE, Lineage

from ..storage import Repo
from .listing import read_card

STATE_FILE = "timeline_state.json"  # hf_time.timeline.state.STATE_FILE, without importing the timeline
PLOT_FILE = "plot.png"
_JSON_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class Snapshot:
    """One commit of a repo, opened for reading its hf_time files.

    Attributes:
        rev: the revision as asked for (a tag, a branch or a sha).
        oid: the commit it resolved to.
        record: the commit record (title, date, tree...).
        lineage: the parsed ``hf_time.json``, or None.
        problems: why a file that is present could not be used, one sentence each.
    """

    repo: Repo
    rev: str
    oid: str
    record: dict
    lineage: Lineage | None = None
    state: dict | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def tree(self) -> dict[str, dict]:
        return self.record["tree"]

    @property
    def section(self) -> dict:
        """The lineage's ``timeline`` section (empty when it is not a timeline snapshot)."""
        return dict(self.lineage.timeline or {}) if self.lineage is not None else {}

    @property
    def step(self) -> int | None:
        step = self.section.get("step")
        return step if isinstance(step, int) else None

    def accuracy(self) -> dict[str, float]:
        """Task -> accuracy of this snapshot: its timeline row, else its card's ``model-index``."""
        rows, step = self.section.get("accuracy"), self.step
        if isinstance(rows, list) and step is not None and 0 < step <= len(rows) and isinstance(rows[step - 1], dict):
            return {str(k): v for k, v in rows[step - 1].items() if isinstance(v, (int, float))}
        return card_accuracy(read_card(self.repo, self.record) or {})

    def metrics(self) -> dict[str, Any]:
        """The TIME metrics after this snapshot's step (A_KA, A_ZS, GM, BWT...), if it has them."""
        rows, step = self.section.get("metrics"), self.step
        if isinstance(rows, list):
            for row in rows:
                if isinstance(row, dict) and row.get("step") == step:
                    return {k: v for k, v in row.items() if k != "step"}
        return {}

    def task_order(self) -> tuple[list[str], set[str]]:
        """``(tasks in column order, held-out tasks)`` from ``timeline_state.json`` when present."""
        state = self.state or {}
        adaptation = [str(t) for t in state.get("adaptation_tasks") or []]
        held_out = [str(t) for t in state.get("held_out_tasks") or []]
        return adaptation + held_out, set(held_out)


def card_accuracy(card: dict) -> dict[str, float]:
    """``dataset name -> value`` of the ``accuracy`` metrics of a card's ``model-index``."""
    out: dict[str, float] = {}
    for model in card.get("model-index") or []:
        for result in (model.get("results") or []) if isinstance(model, dict) else []:
            if not isinstance(result, dict):
                continue
            name = (result.get("dataset") or {}).get("name")
            for metric in result.get("metrics") or []:
                if isinstance(metric, dict) and metric.get("type") == "accuracy" and isinstance(metric.get("value"), (int, float)):
                    out[str(name)] = metric["value"]
    return out


def _read_json(repo: Repo, tree: dict, path: str) -> tuple[Any, str | None]:
    """``(data, problem)`` for a JSON file of the tree; both None when the file is absent."""
    entry = tree.get(path)
    if entry is None:
        return None, None
    if entry["size"] > _JSON_MAX_BYTES:
        return None, f"{path} is {entry['size']} bytes, too large to show"
    try:
        return json.loads(repo.blob_path(entry).read_bytes()), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{path} is not valid JSON ({exc})"


def open_snapshot(repo: Repo, rev: str) -> Snapshot:
    """Read ``rev`` of ``repo`` and its lineage and timeline state.

    Raises:
        RevisionNotFound: ``rev`` names nothing in the repo.
    """
    oid = repo.resolve(rev)
    record = repo.commit_record(oid)
    data, problem = _read_json(repo, record["tree"], LINEAGE_FILE)
    lineage = None
    if data is not None:
        try:
            lineage = Lineage.from_dict(data, f"{LINEAGE_FILE} at {oid[:10]}")
        except ConfigError as exc:
            problem = str(exc)
    state, state_problem = _read_json(repo, record["tree"], STATE_FILE)
    problems = [p for p in (problem, state_problem) if p]
    if state is not None and not isinstance(state, dict):
        problems.append(f"{STATE_FILE} is not a JSON object")
        state = None
    return Snapshot(repo, rev, oid, record, lineage, state, tuple(problems))
