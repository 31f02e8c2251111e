"""``hf-time fisher``: compute an expert's diagonal Fisher on its task and store it beside the expert or in its repo.

Order of work, so that bad input costs nothing: the task is loaded first (a task without labels fails
here), then the model is pinned and its ``config.json`` read to check that the task can score it
(encoder + text task, causal LM + classification/sft task), then — only then — the weights are
downloaded and the Fisher computed (:func:`hf_time.fisher.compute_fisher`). The result,
``fisher.safetensors`` with its provenance (model and weight-file ids, task, data source and key,
N, sampled or empirical), goes to ``--out`` and/or to ``--push-to`` as ONE commit that adds the file
and keeps everything else in that repo.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_time import __version__
from hf_time.errors import ConfigError, IncompatibleTaskError, TaskDataError
from hf_time.fisher import (
    FISHER_FILE,
    FisherConfig,
    compute_fisher,
    save_fisher,
    weights_fingerprint,
)
from hf_time.hub import MODEL_PATTERNS, Hub, PublishResult
from hf_time.timeline.config import DataConfig, TaskConfig


@dataclass(frozen=True)
class FisherResult:
    """What ``hf-time fisher`` did: where the file is, what it records, and the commit that carries it."""

    path: Path | None
    provenance: dict[str, Any]
    published: PublishResult | None
    seconds: float


def load_cli_task(task: TaskConfig, data: DataConfig, hub: Hub | None, *, need_labels: bool = True):
    """Load a task named on the command line; a dataset without its label column is a one-line error."""
    from hf_time.timeline.data import load_task_config

    try:
        return load_task_config(task, data, "--task", hub)
    except ConfigError as e:
        text = str(e)
        if need_labels and "lacks column" in text and repr(task.label_column) in text:
            raise TaskDataError(f"task {task.name!r} has no labels (column {task.label_column!r} missing in "
                                f"{task.dataset}); a Fisher and an evaluation need labelled examples: pass "
                                "--label-column, or a labelled dataset") from None
        raise


def check_task_fits(hub: Hub, res, task) -> None:
    """The task can score this model, from its config.json only (before any weight is downloaded)."""
    from transformers import PretrainedConfig

    from hf_time.evaluation import is_causal_config
    from hf_time.lm_task_types import is_lm_task

    raw = hub.read_json(res, "config.json") or {}
    causal = is_causal_config(PretrainedConfig(architectures=raw.get("architectures")))
    if causal != is_lm_task(task):
        what = "a causal LM" if causal else "an encoder"
        raise IncompatibleTaskError(f"task {task.name!r} cannot score {res.ref} ({what}): give an encoder a text task and a "
                                    "causal LM a classification/sft task (or a built-in *_prompt task)")


def run_fisher(ref: str, task: TaskConfig, *, config: FisherConfig | None = None, data: DataConfig | None = None,
               base: str | None = None, out: str | Path | None = None, push_to: str | None = None,
               hub: Hub | None = None, device: str | None = None, progress: bool = True) -> FisherResult:
    """Compute ``ref``'s diagonal Fisher on ``task`` and write/push ``fisher.safetensors``.

    Args:
        ref: the expert (``org/name[@rev]`` or a folder).
        task: its task (a built-in name, or a dataset with its columns).
        config: N, sampled or empirical, token cap.
        data: how the task is cut (train cap, test size, seed); the Fisher reads the train split.
        base: the base the expert was trained from, recorded so a merge onto another base is refused.
        out: folder to write the file into (default: the expert's own folder when it is local).
        push_to: a Hub repo (normally the expert's own) to add the file to, as one commit.

    Raises:
        ConfigError: nowhere to write; TaskDataError: a task without labels; IncompatibleTaskError:
            the task cannot score the model; RepoNotFoundError / RevisionNotFoundError: a bad ref.
    """
    hub = hub or Hub()
    config = config or FisherConfig()
    data = data or DataConfig(n_train=config.n_examples, n_test=2)
    loaded = load_cli_task(task, data, hub)
    res = hub.resolve(ref)
    if out is None and push_to is None and not res.ref.is_local:
        raise ConfigError(f"nowhere to write the Fisher of {ref}: pass --out DIR or --push-to {res.ref.repo_id}")
    base_pinned = hub.resolve(base).pinned if base else None
    check_task_fits(hub, res, loaded.task)
    folder = hub.download(res, MODEL_PATTERNS)
    tensors, stats = compute_fisher(folder, loaded.task, config, device=device, progress=progress)
    provenance = {"model": res.pinned, "weights": weights_fingerprint(folder), "base": base_pinned, "task": task.name,
                  "data": loaded.source, "data_key": loaded.key, "n_examples": stats["n_examples"],
                  "estimator": "empirical" if config.empirical else "sampled", "config": dataclasses.asdict(config),
                  "hf_time": __version__}
    target = Path(out) if out is not None else (res.ref.path if res.ref.is_local else None)
    published = None
    if target is not None:
        path = save_fisher(target, tensors, provenance)
    if push_to is not None:
        with tempfile.TemporaryDirectory(prefix="hf_time_fisher_") as tmp:
            pushed = path if target is not None else save_fisher(tmp, tensors, provenance)
            published = hub.add_files(push_to, {FISHER_FILE: pushed}, commit_message=f"Fisher of {task.name} "
                                      f"({stats['n_examples']} examples, {provenance['estimator']})",
                                      commit_description=f"Computed by hf_time {__version__} on {res.pinned}.")
    return FisherResult(path if target is not None else None, provenance, published, stats["seconds"])
