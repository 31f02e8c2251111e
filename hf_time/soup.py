"""Greedy soup: add ingredients in order of held-out accuracy, keeping each only if the soup does not get worse.

Paper: Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", ICML 2022, https://arxiv.org/abs/2203.05482 (Recipe 1).

Ingredients (full models of one base) are sorted by their own held-out accuracy, best first (ties
keep the given order). The soup starts as the best one; each next ingredient is tried in the
uniform average of the soup's members and itself, and kept iff the held-out accuracy of that
average is >= the soup's current one (the paper's rule: "does not drop"). The result is the uniform
average (``linear``) of the kept members; every decision and its accuracy is recorded in the
snapshot's lineage (``details.greedy_soup``) and card.

Held-out data: the paper uses a validation split separate from test. hf_time scores each candidate
on the *held-out* split of each task (:func:`held_out_task`: by default the last ``n_val`` examples
of the task's train split, which ingredients must not have trained on; or the test split when asked).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_time.errors import ConfigError

PAPER = "https://arxiv.org/abs/2203.05482"


@dataclass(frozen=True)
class SoupDecision:
    """One step of the greedy procedure: the ingredient, its accuracy alone, the soup's before and with it."""

    ingredient: str
    alone: float
    soup_before: float | None
    with_it: float
    kept: bool


@dataclass(frozen=True)
class SoupResult:
    members: tuple[str, ...]
    accuracy: float
    decisions: tuple[SoupDecision, ...]

    def record(self) -> dict[str, Any]:
        return {"paper": PAPER, "members": list(self.members), "accuracy": self.accuracy,
                "decisions": [asdict(d) for d in self.decisions]}


def check_ingredients(names: Sequence[str]) -> None:
    """A soup needs at least 2 distinct ingredients (checked before anything is read)."""
    if len(names) < 2:
        raise ConfigError(f"a greedy soup needs at least 2 ingredients, got {len(names)} ({', '.join(map(str, names)) or 'none'}); "
                          "pass more --expert")
    if len(set(names)) != len(names):
        dup = next(n for n in names if list(names).count(n) > 1)
        raise ConfigError(f"ingredient {dup} is given twice; each ingredient once")


def greedy_soup(names: Sequence[str], score: Callable[[tuple[str, ...]], float], *, single: bool = False) -> SoupResult:
    """The greedy soup decisions, given ``score(members) -> held-out accuracy of their uniform average``.

    ``score`` of a single name is that ingredient alone. Pure apart from ``score``: no I/O here.
    ``single`` accepts one ingredient (a timeline's first step: the soup is that expert).
    """
    if not (single and len(names) == 1):
        check_ingredients(names)
    alone = {n: float(score((n,))) for n in names}
    order = sorted(names, key=lambda n: -alone[n])  # stable: ties keep the given order
    members, current = [order[0]], alone[order[0]]
    decisions = [SoupDecision(order[0], alone[order[0]], None, current, True)]
    for name in order[1:]:
        candidate = float(score((*members, name)))
        kept = candidate >= current
        decisions.append(SoupDecision(name, alone[name], current, candidate, kept))
        if kept:
            members.append(name)
            current = candidate
    return SoupResult(tuple(members), current, tuple(decisions))


def held_out_task(task, n_val: int | None, split: str = "validation"):
    """The task whose *test* split is the held-out data the soup is chosen on.

    ``validation``: the last ``n_val`` examples of the train split; ``test``: the test split itself.
    """
    from hf_time.tasks import TextTask

    if split == "test":
        return task
    if not isinstance(task, TextTask):
        raise ConfigError(f"task {task.name!r}: a validation slice is taken from text tasks; use --split test")
    n = len(task.train) if n_val is None else min(n_val, len(task.train))
    if n < 2:
        raise ConfigError(f"task {task.name!r} has {len(task.train)} training examples; a held-out slice needs >= 2")
    val = task.train.select(range(len(task.train) - n, len(task.train)))
    return TextTask(task.name, task.train.select([]), val, task.label_names, task.label_descriptions)


def run_greedy_soup(experts: Sequence[str], tasks: Sequence, *, out: str | Path, hub=None, n_val: int | None = 100,
                    split: str = "validation", push_to: str | None = None, max_length: int = 32,
                    progress: bool = True, title: str | None = None):
    """Choose a greedy soup of ``experts`` on ``tasks``' held-out data and write it (uniform ``linear`` merge).

    Returns:
        (the :class:`~hf_time.pipeline.run.MergeResult` of the soup, the :class:`SoupResult`).

    Raises:
        ConfigError: fewer than 2 ingredients (before anything is downloaded).
    """
    from hf_time.evaluation import evaluate_tasks
    from hf_time.hub import MODEL_PATTERNS, Hub
    from hf_time.lineage import Lineage
    from hf_time.pipeline.cards import render_card
    from hf_time.pipeline.snapshot import write_snapshot

    check_ingredients(list(experts))
    hub = hub or Hub()

    def merge(base: str, members, out_dir, **run_options):
        """A uniform ``linear`` merge through the pipeline (what ``hf-time merge --method linear`` runs)."""
        from hf_time.config import ExpertSpec, MergeConfig
        from hf_time.pipeline import RunOptions, run

        config = MergeConfig(base=base, experts=tuple(ExpertSpec(str(m)) for m in members), method="linear")
        return run(config, RunOptions(out=str(out_dir), **run_options), hub=hub)

    held = [held_out_task(t, n_val, split) for t in tasks]
    folders = {e: hub.download(hub.resolve(e), MODEL_PATTERNS) for e in experts}
    cache: dict[tuple[str, ...], float] = {}

    def accuracy(folder) -> float:
        scores = evaluate_tasks(folder, held, max_length=max_length)
        return sum(scores.values()) / len(scores)

    with tempfile.TemporaryDirectory(prefix="hf_time_soup_") as tmp:
        def score(members: tuple[str, ...]) -> float:
            key = tuple(sorted(members))
            if key not in cache:
                if len(members) == 1:
                    cache[key] = accuracy(folders[members[0]])
                else:
                    res = merge(str(folders[members[0]]), [folders[m] for m in members], Path(tmp) / str(len(cache)),
                                progress=False)
                    cache[key] = accuracy(res.out_dir)
            return cache[key]

        result = greedy_soup(list(experts), score)
    first = result.members[0]
    merged = merge(first, list(result.members), out, progress=progress, title=title)
    lineage = Lineage.load(merged.out_dir)
    import dataclasses

    lineage = dataclasses.replace(lineage, details={**dict(lineage.details), "greedy_soup": result.record()})
    lineage = lineage.with_evaluation([{"task": "+".join(t.name for t in held), "metric": "accuracy",
                                        "value": result.accuracy, "split": split, "n": sum(len(t.test) for t in held)}])
    write_snapshot(merged.out_dir, lineage, card=render_card(lineage, title=title or "Greedy soup", repo=push_to))
    published = None
    if push_to:
        published = hub.publish(merged.out_dir, push_to, commit_message=f"hf_time: greedy soup of {len(result.members)} "
                                f"of {len(experts)} ingredients")
    return dataclasses.replace(merged, lineage=lineage, published=published), result
