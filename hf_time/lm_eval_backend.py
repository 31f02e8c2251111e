"""lm-evaluation-harness as an evaluation backend for causal LMs (optional extra: ``pip install hf_time[lm_eval]``).

``hf-time eval REF --backend lm_eval --lm-eval-task NAME [--lm-eval-include DIR]`` runs the harness's
``simple_evaluate`` with its ``hf`` model on the downloaded model folder. Task names are checked
against the harness's task index *before* the model is downloaded: an unknown name is a one-line
:class:`~hf_time.errors.LmEvalTaskNotFoundError` with the closest names. Offline use: point
``--lm-eval-include`` at a folder of task YAMLs whose ``dataset_path`` reads local files (``json``
with ``dataset_kwargs.data_files``); then only that folder is indexed (``include_defaults=False``).
Each result row is (task, metric, value, split, n) for the harness's ``acc``/``acc_norm``/
``exact_match``... entries (their ``,none`` filter suffix dropped; stderr rows skipped).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_time.errors import ConfigError, LmEvalTaskNotFoundError


@dataclass(frozen=True)
class LmEvalTasks:
    names: tuple[str, ...]
    include: str | None = None


def _task_manager(include: str | None):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("the lm_eval backend needs lm-evaluation-harness: pip install 'hf_time[lm_eval]' "
                          "(or pip install lm-eval)") from None
    if include is not None and not Path(include).is_dir():
        raise ConfigError(f"--lm-eval-include {include}: not a folder of lm-eval task YAMLs")
    return TaskManager(include_path=include, include_defaults=include is None)


def check_lm_eval_tasks(names: Sequence[str], include: str | None = None) -> LmEvalTasks:
    """Every task name exists in the harness's index (nothing downloaded, no model loaded).

    Raises:
        ConfigError: no task given, or lm-eval not installed.
        LmEvalTaskNotFoundError: a name not in the index (with the closest names).
    """
    if not names:
        raise ConfigError("the lm_eval backend needs at least one --lm-eval-task NAME")
    known = set(_task_manager(include).all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f"in {include}" if include else "among lm-eval's tasks"
            raise LmEvalTaskNotFoundError(f"lm-eval task {name!r} not found {where}{hint} (list them with `lm-eval ls tasks`, "
                                          "or pass --lm-eval-include DIR with its YAML)")
    return LmEvalTasks(tuple(names), include)


def evaluate_lm_eval(model_dir: str | Path, tasks: LmEvalTasks, *, device: str | None = None, batch_size: int = 8,
                     limit: int | None = None) -> list[tuple[str, str, float, str, int]]:
    """Run the harness on a causal-LM folder; (task, metric, value, split, n) per reported metric."""
    import lm_eval

    out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"},
                                  tasks=list(tasks.names), task_manager=_task_manager(tasks.include),
                                  device=device or "cpu", batch_size=batch_size, limit=limit, log_samples=False,
                                  bootstrap_iters=0)
    rows = []
    for task, metrics in out["results"].items():
        n = int((out.get("n-samples") or {}).get(task, {}).get("effective", 0))
        split = ((out.get("configs") or {}).get(task) or {}).get("test_split") or "test"
        for key, value in metrics.items():
            metric = key.split(",")[0]
            if "," not in key or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            rows.append((task, metric, float(value), split, n))
    return rows
