"""The greedy-soup deploy technique (``strategy.deploy: greedy_soup``): the ``soup-t`` node of a timeline.

After step t the deployed model is the greedy soup (:mod:`hf_time.soup`, Wortsman et al., 2022) of
the experts 1..t: ingredients ranked by their accuracy on the *validation slices* of the tasks seen so
far, each added to the uniform average only if that accuracy does not drop. The validation slice of a
task is the last ``strategy.soup_n_val`` examples of its train split, held out of training (so the
task's content key records it, and every expert of such a timeline is keyed apart). Candidates are
merged with ``linear`` through the merge pipeline and scored by the timeline's own evaluator; the
decisions are recorded in the node's lineage (``details.greedy_soup``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from hf_time.errors import ConfigError
from hf_time.lineage import Lineage
from hf_time.timeline.data import LoadedTask, content_key


def hold_out_validation(loaded: LoadedTask, n: int) -> tuple[LoadedTask, Any]:
    """(the task without its last ``n`` training examples, a task whose test split is those examples).

    Raises:
        ConfigError: a causal-LM task, or too few training examples.
    """
    from hf_time.soup import held_out_task
    from hf_time.tasks import TextTask

    task = loaded.task
    if not isinstance(task, TextTask):
        raise ConfigError(f"strategy.deploy greedy_soup chooses on validation slices of text tasks; {task.name!r} is a "
                          f"{type(task).__name__}")
    if len(task.train) < n + 1:
        raise ConfigError(f"strategy.soup_n_val: task {task.name!r} has {len(task.train)} training examples, too few to "
                          f"hold {n} out")
    validation = held_out_task(task, n)
    kept = dataclasses.replace(task, train=task.train.select(range(len(task.train) - n)))
    return dataclasses.replace(loaded, task=kept, key=content_key(loaded.key, "soup-validation", n)), validation


def soup_product(plan, node, refs, local, folders, out: Path, *, seen, evaluator, evaluation, device, hub) -> Lineage:
    """Compute ``soup-t`` into ``out``: greedy decisions on ``seen`` (validation tasks), then the linear merge.

    Args:
        plan, node: the timeline plan and the soup node (its inputs are experts 1..t).
        refs, local, folders: node key -> reference / pinned ref -> local folder / node key -> local folder.
        seen: validation tasks of the steps so far; ``evaluator``, ``evaluation``: the timeline's scorer and settings.
    """
    from hf_time.config import ExpertSpec, MergeConfig
    from hf_time.pipeline import RunOptions, prepare, produce
    from hf_time.soup import greedy_soup

    inputs = {n.label: n for n in plan.inputs(node)}

    def linear(labels, folder: Path) -> Lineage:
        request = MergeConfig(base=refs[plan.base.key], experts=tuple(ExpertSpec(refs[inputs[k].key]) for k in labels),
                              method="linear", device=device or "cpu")
        merge_plan, merge_inputs = prepare(request, RunOptions(progress=False), hub, local=local)
        return produce(merge_plan, merge_inputs, hub, folder, progress=False)

    with tempfile.TemporaryDirectory(prefix="hf_time_soup_") as scratch:
        cache: dict[tuple[str, ...], float] = {}

        def score(labels: tuple[str, ...]) -> float:
            key = tuple(sorted(labels))
            if key not in cache:
                folder = folders[inputs[labels[0]].key]
                if len(labels) > 1:
                    folder = Path(scratch) / str(len(cache))
                    folder.mkdir()  # produce() writes into an existing (empty) folder
                    linear(labels, folder)
                acc = evaluator(folder, seen, batch_size=evaluation.batch_size, max_length=evaluation.max_length,
                                device=device)
                cache[key] = sum(acc.values()) / len(acc)
            return cache[key]

        result = greedy_soup(list(inputs), score, single=True)
    lineage = linear(result.members, out)
    return dataclasses.replace(lineage, details={**dict(lineage.details), "greedy_soup": result.record()})
