"""``hf-time eval``: score any Hub model or adapter on timeline tasks, print a table, optionally add it to the card.

Bad input costs nothing: tasks are loaded first (labels required), the model is pinned and each task
checked against its ``config.json`` (a text task on an encoder, a classification/sft task on a
causal LM) before any weight is downloaded. Scores come from the project's scorers
(:func:`hf_time.evaluation.evaluate_results`: head-free for encoders, likelihood / exact match for
causal LMs), or from lm-evaluation-harness with ``backend="lm_eval"`` (:mod:`hf_time.lm_eval_backend`).
With ``push_to_card`` the results are merged into the repo's ``README.md`` ``model-index``
(replacing earlier results of the same task, metric and split) and committed as ONE commit that
changes only the card.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_time.errors import ConfigError
from hf_time.hub import MODEL_PATTERNS, Hub, PublishResult
from hf_time.timeline.config import DataConfig, TaskConfig

SPLITS = ("test", "train")


@dataclass(frozen=True)
class EvalRow:
    task: str
    metric: str
    value: float
    split: str
    n: int


@dataclass(frozen=True)
class EvalReport:
    model: str
    rows: tuple[EvalRow, ...]
    published: PublishResult | None = None

    def table(self) -> str:
        lines = [f"{'task':<24} {'metric':<14} {'split':<6} {'n':>5} {'value':>8}"]
        lines += [f"{r.task:<24} {r.metric:<14} {r.split:<6} {r.n:>5} {r.value:>8.4f}" for r in self.rows]
        return "\n".join(lines)


def _on_split(task, split: str):
    """The task whose ``test`` is the split to score (``train``: its training examples)."""
    if split == "test":
        return task
    import dataclasses

    return dataclasses.replace(task, test=task.train)


def card_with_results(card_text: str | None, rows: Sequence[EvalRow], model_name: str) -> str:
    """``card_text`` (or a minimal card) with ``rows`` merged into its ``model-index`` (same task/metric/split replaced)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card = ModelCard(card_text) if card_text else ModelCard.from_template(ModelCardData(), template_str="---\n{{ card_data }}\n---\n")
    data = card.data
    new = {(r.task, r.metric, r.split): r for r in rows}
    kept = [e for e in (data.eval_results or []) if (e.dataset_name, e.metric_type, e.dataset_split) not in new]
    data.eval_results = kept + [EvalResult(task_type="text-classification", dataset_type=r.task, dataset_name=r.task,
                                           dataset_split=r.split, metric_type=r.metric, metric_value=round(r.value, 4))
                                for r in rows]
    data.model_name = data.model_name or model_name
    return str(card)


def run_eval(ref: str, tasks: Sequence[TaskConfig], *, split: str = "test", data: DataConfig | None = None,
             hub: Hub | None = None, push_to_card: bool = False, backend: str = "hf_time",
             lm_eval_tasks: Sequence[str] = (), lm_eval_include: str | None = None, max_length: int = 32, batch_size: int = 64,
             device: str | None = None) -> EvalReport:
    """Evaluate ``ref`` on ``tasks`` (or on ``lm_eval_tasks`` with the lm_eval backend).

    Raises:
        ConfigError: a bad split or backend; TaskDataError: a task without labels; IncompatibleTaskError:
            a task that cannot score this model; LmEvalTaskNotFoundError: an lm-eval task name not found.
    """
    from hf_time.fisher_run import check_task_fits, load_cli_task

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if backend not in ("hf_time", "lm_eval"):
        raise ConfigError(f"--backend {backend!r}: use hf_time or lm_eval")
    hub = hub or Hub()
    if push_to_card:
        res_check = hub.resolve(ref)
        if res_check.ref.is_local:
            raise ConfigError(f"--push-to-card adds results to a Hub repo's card; {ref} is a local folder")
    if backend == "lm_eval":
        from hf_time.lm_eval_backend import check_lm_eval_tasks, evaluate_lm_eval

        specs = check_lm_eval_tasks(lm_eval_tasks, lm_eval_include)  # before any download
        res = hub.resolve(ref)
        folder = hub.download(res, MODEL_PATTERNS)
        scores = evaluate_lm_eval(folder, specs, device=device, batch_size=min(batch_size, 16))
        rows = tuple(EvalRow(t, m, v, s, n) for t, m, v, s, n in scores)
    else:
        if not tasks:
            raise ConfigError("no task to evaluate: pass --task (repeat)")
        data = data or DataConfig()
        loaded = [load_cli_task(t, data, hub).task for t in tasks]
        res = hub.resolve(ref)
        files = hub.list_files(res)
        if "adapter_config.json" not in files:
            for task in loaded:
                check_task_fits(hub, res, task)
        folder = hub.download(res, MODEL_PATTERNS)
        from hf_time.evaluation import evaluate_results

        results = evaluate_results(folder, [_on_split(t, split) for t in loaded], batch_size=batch_size,
                                   max_length=max_length, device=device)
        rows = tuple(EvalRow(r.task, r.metric, float(r.score), split, int(r.n)) for r in results.values())
    published = None
    if push_to_card:
        card = None
        if "README.md" in hub.list_files(res):
            card = (Path(hub.download(res, ["README.md"])) / "README.md").read_text(encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="hf_time_card_") as tmp:
            path = Path(tmp) / "README.md"
            path.write_text(card_with_results(card, rows, res.ref.repo_id), encoding="utf-8")
            branch = res.ref.revision if res.ref.revision and res.ref.revision != res.sha else "main"
            published = hub.add_files(res.ref.repo_id, {"README.md": path}, commit_message=f"Evaluation results: "
                                      f"{', '.join(sorted({r.task for r in rows}))}", branch=branch)
    return EvalReport(res.pinned, rows, published)
