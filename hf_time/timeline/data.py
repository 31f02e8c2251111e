"""The timeline's tasks: loaded once, each with a content key that changes exactly when its data does.

A task is a built-in offline task, a local folder/file, or a dataset on the Hub (pinned to the commit
sha it was read at). Its *key* hashes what the task's examples depend on — the data (package
version, file hashes or commit sha), the columns, the label descriptions and the split settings —
so an expert trained on it is reused on a re-run exactly when the same examples would be drawn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_time.errors import ConfigError, HfTimeError
from hf_time.tasks import TextTask, get_task_spec, load_task, task_from_dataset
from hf_time.timeline.config import DataConfig, TaskConfig, TimelineConfig

logger = logging.getLogger(__name__)


def content_key(*parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``: the key every timeline artefact is stored under."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class LoadedTask:
    """A task of the timeline, its content key and where its data came from."""

    task: TextTask
    key: str
    source: dict[str, Any]

    @property
    def name(self) -> str:
        return self.task.name


def _files_digest(path: Path) -> str:
    from hf_time.hashing import sha256_file

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return content_key([(str(f.relative_to(path)) if path.is_dir() else f.name, sha256_file(f)) for f in files])


def _download_dataset(hub, ref: str) -> tuple[Path, dict[str, Any]]:
    """Pin a Hub dataset ``org/name[@rev]`` to a commit sha and download its files at that sha."""
    folder, sha = hub.download_dataset(ref)
    repo_id, _, revision = ref.partition("@")
    return folder, {"dataset": repo_id, "revision": revision or None, "sha": sha}


def load_one(spec: TaskConfig, config: TimelineConfig, path: str, hub=None) -> LoadedTask:
    """Load one task of the config; ``path`` (``tasks[2]``) prefixes every problem.

    Raises:
        ConfigError: missing columns or labels that do not fit, each naming its key path.
    """
    return load_task_config(spec, config.data, path, hub)


def load_task_config(spec: TaskConfig, data: DataConfig, path: str, hub=None) -> LoadedTask:
    """Load one task from its config and how tasks are cut (``hf-time fisher``/``eval`` use it outside timelines).

    Raises:
        ConfigError: missing columns or labels that do not fit, each naming its key path.
    """
    n_train = spec.n_train if spec.n_train is not None else data.n_train
    n_test = spec.n_test if spec.n_test is not None else data.n_test
    seed = data.seed
    split = {"n_train": n_train, "n_test": n_test, "seed": seed}
    if spec.is_lm:
        return _load_lm(spec, split, path, hub)
    if spec.dataset is None:
        pkg = get_task_spec(spec.name).package
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = None  # load_task raises the error that names the pip command
        task = load_task(spec.name, n_train=n_train, n_test=n_test, seed=seed)
        source = {"builtin": spec.name, "package": pkg, "version": version}
        # A built-in prompt task's template is part of what its examples are (verbalizers alone are not).
        prompt = [dataclasses.asdict(task.prompt)] if getattr(task, "prompt", None) is not None else []
        return LoadedTask(task, content_key("task", source, split, task.label_descriptions, *prompt), source)
    local = Path(os.path.expanduser(spec.dataset))
    try:
        if local.exists():
            folder, source = local, {"path": str(local.absolute()), "digest": _files_digest(local)}
            # The digest, not the path, is what the key reads: moving the data keeps the experts.
            key_source = {"digest": source["digest"]}
        else:
            if hub is None:
                raise ConfigError(f"{path}.dataset: {spec.dataset!r} is not a local path and no Hub client was given")
            folder, source = _download_dataset(hub, spec.dataset)
            key_source = {"dataset": source["dataset"], "sha": source["sha"]}
        task = task_from_dataset(spec.name, folder, spec.text_column, spec.label_column, spec.label_descriptions,
                                 label_names=spec.label_names, n_train=n_train, n_test=n_test, seed=seed)
    except ConfigError as e:
        raise ConfigError.from_problems(f"cannot load task {spec.name!r}", [_name_key(p, spec, path) for p in e.problems]) from None
    columns = {"text": spec.text_column, "label": spec.label_column}
    return LoadedTask(task, content_key("task", key_source, columns, task.label_names, task.label_descriptions, split), source)


def _load_lm(spec: TaskConfig, split: dict, path: str, hub) -> LoadedTask:
    """A ``classification`` or ``sft`` task: its data (built-in source, local, or pinned on the Hub) and key."""
    from hf_time.lm_tasks import load_lm_task

    lm = spec.lm_spec()
    data, source, key_source = None, {}, {}
    if spec.dataset is not None:
        local = Path(os.path.expanduser(spec.dataset))
        if local.exists():
            data, source = local, {"path": str(local.absolute()), "digest": _files_digest(local)}
            key_source = {"digest": source["digest"]}
        elif hub is None:
            raise ConfigError(f"{path}.dataset: {spec.dataset!r} is not a local path and no Hub client was given")
        else:
            data, source = _download_dataset(hub, spec.dataset)
            key_source = {"dataset": source["dataset"], "sha": source["sha"]}
    else:
        pkg = get_task_spec(spec.source).package
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = None
        source = key_source = {"builtin": spec.source, "package": pkg, "version": version}
    try:
        task = load_lm_task(lm, n_train=split["n_train"], n_test=split["n_test"], seed=split["seed"], data=data)
    except ConfigError as e:
        raise ConfigError.from_problems(f"cannot load task {spec.name!r}", [f"{path}: {p}" for p in e.problems]) from None
    spec_data = {k: v for k, v in dataclasses.asdict(lm).items() if k != "dataset"}  # the data is keyed by content
    return LoadedTask(task, content_key("task", spec.kind, key_source, spec_data, split), source)


def _name_key(problem: str, spec: TaskConfig, path: str) -> str:
    """Prefix a task problem with the key path of the setting it is about."""
    if f"column {spec.text_column!r}" in problem:
        return f"{path}.text_column: {problem}"
    if f"column {spec.label_column!r}" in problem:
        return f"{path}.label_column: {problem}"
    if "description" in problem:
        return f"{path}.label_descriptions: {problem}"
    if "label" in problem:
        return f"{path}.label_column: {problem}"
    return f"{path}.dataset: {problem}"


def load_tasks(config: TimelineConfig, hub=None) -> tuple[list[LoadedTask], list[LoadedTask], list[LoadedTask]]:
    """Load the adaptation, held-out and base-replay tasks, reporting every problem at once.

    Returns:
        ``(adaptation, held_out, base_replay)`` lists in config order.

    Raises:
        ConfigError: one problem per task that cannot be loaded, each naming its key path.
    """
    problems: list[str] = []
    groups: list[list[LoadedTask]] = []
    base_specs = [TaskConfig(name=n) for n in config.replay.base_tasks]
    for label, specs in (("tasks", config.tasks), ("held_out", config.held_out), ("replay.base_tasks", base_specs)):
        loaded = []
        for i, spec in enumerate(specs):
            try:
                loaded.append(load_one(spec, config, f"{label}[{i}]", hub))
            except ConfigError as e:
                problems += e.problems
            except HfTimeError as e:  # data package missing, dataset not on the Hub
                problems.append(f"{label}[{i}]: {e}")
        groups.append(loaded)
    if problems:
        raise ConfigError.from_problems("cannot load the timeline's tasks", problems)
    logger.info("loaded %d adaptation, %d held-out tasks", len(groups[0]), len(groups[1]))
    return groups[0], groups[1], groups[2]
