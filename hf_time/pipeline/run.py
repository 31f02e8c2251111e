"""The whole chain for one output: plan -> resolve -> bind -> execute -> artifact -> snapshot -> publish.

:func:`run` is what ``hf_time.merge`` and ``hf-time merge`` call for every kind of method;
:func:`produce` stops at the artifact (weights, carried files, lineage) for callers that publish
differently, such as the timeline, and :func:`run_revert` rebuilds one expert of an RMM snapshot
through the same stages. Each stage raises before the next starts, so bad input fails before any
download and nothing half-written is ever visible (the output folder appears complete, or not at all).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from hf_time.align.config import to_data
from hf_time.config import MergeConfig
from hf_time.errors import ConfigError, PublishError
from hf_time.hub import Hub, PublishResult
from hf_time.atomic import atomic_output_dir, check_output_free
from hf_time.lineage import Lineage, RefRecord
from hf_time.pipeline.artifact import merge_lineage, training_lineage
from hf_time.pipeline.cards import render_card
from hf_time.pipeline.executors import EXECUTORS
from hf_time.pipeline.plan import DEFAULT_SHARD_SIZE, Plan, RunOptions, make_plan, shard_size
from hf_time.pipeline.resolve import Inputs, resolve
from hf_time.pipeline.revert import execute_revert, resolve_revert
from hf_time.pipeline.snapshot import write_snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    """What :func:`run` produced.

    Attributes:
        out_dir: the output folder (a model, an adapter or an RMM snapshot).
        lineage: its lineage (the content of its ``hf_time.json``).
        published: the Hub commit, when ``push_to`` was given.
    """

    out_dir: Path
    lineage: Lineage
    published: PublishResult | None = None

    @property
    def state(self) -> Mapping[str, Any] | None:
        """A fold's state after this step (what the next fold continues from)."""
        return self.lineage.state


def _check_out(options: RunOptions) -> Path:
    if options.out is None:
        raise ConfigError("no output folder given; pass --out DIR")
    check_output_free(options.out, overwrite=options.overwrite)
    return Path(options.out)


def prepare(config: MergeConfig, options: RunOptions, hub: Hub, *, local: Mapping[str, Path] | None = None,
            state: Mapping[str, Any] | None = None, plan: Plan | None = None) -> tuple[Plan, Inputs]:
    """Plan (no network), resolve (metadata only) and bind: everything that can fail before writing.

    Args:
        local: pinned refs the caller holds on disk (read there, recorded as the Hub refs).
        state: a fold's incoming state, overriding the previous snapshot's.
        plan: the plan of ``config`` when the caller made it already.
    """
    plan = plan or make_plan(config, options)
    inputs = resolve(hub, config, plan, local=local)
    return EXECUTORS[plan.method.kind].bind(plan, inputs, state), inputs


def produce(plan: Plan, inputs: Inputs, hub: Hub, folder: Path, *, progress: bool = True) -> Lineage:
    """Execute ``plan`` into ``folder`` (which must exist and be empty) and return the lineage of what ran."""
    output = EXECUTORS[plan.method.kind].execute(plan, inputs, hub, folder, progress=progress)
    return merge_lineage(plan, inputs, folder, output)


def _check_tag(hub: Hub, options: RunOptions, plan: Plan, inputs: Inputs) -> None:
    """Before any download: an existing tag is fine only if it holds this very merge (a re-publish).

    Raises:
        PublishError: the tag points at a snapshot made from other inputs or settings.
    """
    found = hub.tag_lineage(options.push_to, options.tag)
    if found is None:
        return
    commit, lineage = found
    same = (lineage is not None and lineage.method is not None and lineage.method.name == plan.method.name
            and dict(lineage.method.parameters) == plan.parameters and lineage.method.lines == plan.lines
            and lineage.output.dtype == plan.dtype
            and [e.pinned for e in lineage.experts] == [RefRecord.from_resolved(e.res).pinned for e in inputs.experts]
            and [e.weight for e in lineage.experts] == list(plan.recorded_weights())
            and lineage.base.pinned == RefRecord.from_resolved(inputs.base.res).pinned
            and dict(lineage.details.get("align") or {}) == (to_data(plan.align) if plan.align is not None else {}))
    if not same:
        raise PublishError(f"tag {options.tag!r} already exists in {options.push_to} at commit {commit[:10]} with another "
                           "merge; choose another --tag or delete the old one (nothing was downloaded)")


def _title(options: RunOptions) -> str | None:
    return options.title or (options.push_to.split("/")[-1] if options.push_to else None)


def _publish(hub: Hub, out_dir: Path, options: RunOptions, message: str, description: str) -> PublishResult | None:
    if not options.push_to:
        return None
    return hub.publish(out_dir, options.push_to, tag=options.tag, private=options.private,
                       commit_message=message, commit_description=description)


def run(config: MergeConfig, options: RunOptions, *, hub: Hub | None = None,
        state: Mapping[str, Any] | None = None) -> MergeResult:
    """Merge (or fold) as ``config`` says, write the snapshot, optionally publish it as one commit.

    Args:
        config: the request (method, parameters, inputs, dtype, device, LiNeS, previous snapshot).
        options: output folder, publishing and run options.
        hub: the Hub client (default: ``HF_ENDPOINT`` and the ambient token).
        state: a fold's incoming state, overriding the one recorded in the previous snapshot.

    Raises:
        ConfigError, UnknownMethodError: bad request (before any network call).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
        RepoNotFoundError, RevisionNotFoundError, IncompatibleExpertsError, UnsafeCheckpointError: found from
            metadata, before any weight is downloaded.
    """
    plan = make_plan(config, options)  # every request problem before any network call
    out = _check_out(options)
    hub = hub or Hub()
    if options.push_to:
        hub.check_publish(options.push_to)  # repo id and token, before any download
    plan, inputs = prepare(config, options, hub, state=state, plan=plan)
    if options.push_to and options.tag:
        _check_tag(hub, options, plan, inputs)
    with atomic_output_dir(out, overwrite=options.overwrite) as tmp:
        lineage = produce(plan, inputs, hub, tmp, progress=options.progress)
        write_snapshot(tmp, lineage, card=render_card(lineage, title=_title(options), repo=options.push_to))
    out_dir = out.absolute()
    method = plan.method
    what = f"expert {lineage.state['t']} folded" if lineage.kind == "fold" else f"{len(inputs.experts)} expert(s) merged"
    logger.info("%s with %s into %s", what, method.name, out_dir)
    published = _publish(hub, out_dir, options, f"hf_time: {method.name}, {what}",
                         "Inputs: " + ", ".join(r.pinned for r in lineage.inputs()))
    return MergeResult(out_dir, lineage, published)


def record_training(folder: str | os.PathLike, init: RefRecord, *, task: str, training: Mapping[str, Any],
                    stats: Mapping[str, Any] | None = None, adapter: bool = False, title: str | None = None,
                    timeline: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Lineage:
    """Make a finetuned expert's folder a snapshot: its ``train`` lineage and card, ready to publish.

    Args:
        folder: the trained model (or PEFT adapter) folder.
        init: the model it was trained from, as read (pinned when it came from the Hub).
        task: the task's name; ``training``: the training config; ``stats``: what the run measured.
        adapter: the folder holds a PEFT adapter (``adapter_model.safetensors``) rather than full weights.
        timeline: the timeline section when a timeline trained it.
        extra: further facts for the lineage's details (e.g. the task's content key).

    Returns:
        The lineage written into ``folder``.
    """
    folder = Path(folder)
    files = ["adapter_model.safetensors"] if adapter else sorted(p.name for p in folder.glob("*.safetensors"))
    details = {"task": task, **dict(extra or {}), "training": dict(training), "stats": dict(stats or {})}
    lineage = training_lineage(init, folder, files, fmt="adapter" if adapter else "model", details=details,
                               timeline=timeline)
    write_snapshot(folder, lineage, card=render_card(lineage, title=title or f"Expert: {task}"))
    return lineage


def record_evaluation(folder: str | os.PathLike, results: Sequence[Mapping[str, Any]], *,
                      title: str | None = None, repo: str | None = None) -> Lineage:
    """Add scores measured on a snapshot to its lineage and card (``model-index``), before it is published.

    Args:
        folder: a snapshot hf_time wrote (it has ``hf_time.json``).
        results: one mapping per score: ``task``, ``metric``, ``value`` (optional ``dataset``, ``split``, ``n``).
        title, repo: the card's title and target repo, as for :func:`run`.

    Raises:
        ConfigError: the folder has no lineage, or a result is malformed.
    """
    folder = Path(folder)
    lineage = Lineage.load(folder)
    if lineage is None:
        raise ConfigError(f"{folder} has no hf_time.json; evaluation results are recorded on snapshots hf_time wrote")
    lineage = lineage.with_evaluation(results)
    write_snapshot(folder, lineage, card=render_card(lineage, title=title or folder.name, repo=repo))
    return lineage


def run_revert(ref: str | os.PathLike, expert: int | str, options: RunOptions, *, dense: bool = False,
               dtype: str | None = None, hub: Hub | None = None) -> MergeResult:
    """Rebuild expert ``expert`` of an RMM snapshot as a PEFT adapter (or, ``dense``, merged into the base).

    Raises:
        ConfigError: ``ref`` is not an RMM snapshot, or a bad dtype / shard size.
        UnknownExpertError: no such expert (index out of range or unknown name).
        OutputExistsError: ``out`` exists and ``overwrite`` is False (before any network call).
    """
    out = _check_out(options)
    problems: list[str] = []
    if options.max_shard_size is not None and not dense:
        problems.append("--max-shard-size applies to --dense outputs; an adapter is one file, remove it")
    shard = shard_size(options.max_shard_size if options.max_shard_size is not None else DEFAULT_SHARD_SIZE, problems)
    if problems:
        raise ConfigError.from_problems("invalid revert", problems)
    hub = hub or Hub()
    if options.push_to:
        hub.check_publish(options.push_to)
    plan = resolve_revert(hub, os.fspath(ref), expert, dense=dense, dtype=dtype, max_shard_bytes=shard,
                          allow_pickle=options.allow_pickle)
    with atomic_output_dir(out, overwrite=options.overwrite) as tmp:
        lineage = execute_revert(plan, hub, tmp, progress=options.progress)
        write_snapshot(tmp, lineage, card=render_card(lineage, title=_title(options), repo=options.push_to))
    out_dir = out.absolute()
    name = lineage.experts[0].name
    logger.info("reverted expert %d (%s) of %s into %s", plan.index, name, plan.source.pinned, out_dir)
    published = _publish(hub, out_dir, options, f"hf_time: expert {name} reverted from RMM",
                         f"Reverted expert {plan.index} of {plan.source.pinned}")
    return MergeResult(out_dir, lineage, published)
