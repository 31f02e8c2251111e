"""The card and the plot of a timeline snapshot.

The card is rendered from ``model_cards/timeline.md`` through ``ModelCard.from_template`` with a
``model-index`` (one :class:`EvalResult` per task, plus A_KA, A_ZS and their geometric mean), so the
Hub shows the scores and ``ModelCard.load(...).data.eval_results`` reads them back. The plot (PNG,
matplotlib's Agg backend, no timestamps in the file) shows the A_KA / A_ZS / GM trajectory and the
accuracy matrix; both are pure functions of the state, so re-rendering gives the same bytes.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from hf_time.cards import render_template
from hf_time.timeline.state import TimelineState

PLOT_FILE = "plot.png"
TIMELINE_DATASET = "hf_time/timeline"  # model-index dataset type of the timeline-level metrics


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _link(record) -> str:
    # Endpoint-relative links: they work on huggingface.co and on any other Hub (an embedded one).
    if record.repo_id and record.sha:
        where = f"{record.repo_id}@{record.tag}" if record.tag else record.repo_id
        return f"[{where}](/{record.repo_id}/tree/{record.sha}) `{record.sha[:10]}`"
    return f"`{record.label}`"


def matrix_table(state: TimelineState) -> str:
    """The accuracy matrix as a markdown table: the base row, then one row per step."""
    tasks = list(state.adaptation_tasks) + list(state.held_out_tasks)
    head = "| model | " + " | ".join(list(state.adaptation_tasks) + [f"{t}*" for t in state.held_out_tasks]) + " | A_KA | A_ZS |"
    rows = [head, "|" + "---|" * (len(tasks) + 3)]
    metrics = {m["step"]: m for m in state.metrics()}
    base = state.base_accuracy

    def mean(row: Mapping[str, float], names) -> float | None:
        return sum(row[n] for n in names) / len(names) if names else None

    rows.append("| base | " + " | ".join(_fmt(base.get(t)) for t in tasks)
                + f" | {_fmt(mean(base, state.adaptation_tasks))} | {_fmt(mean(base, state.held_out_tasks))} |")
    for s in state.steps:
        m = metrics[s.step]
        rows.append(f"| step {s.step} ({s.task}) | " + " | ".join(_fmt(s.accuracy[t]) for t in tasks)
                    + f" | {_fmt(m['a_ka'])} | {_fmt(m['a_zs'])} |")
    return "\n".join(rows)


# (model-index task type, metric type, metric name) of what a timeline scores per task kind.
HEAD_FREE = ("text-classification", "accuracy", "head-free accuracy")
LABEL_LIKELIHOOD = ("text-generation", "accuracy", "accuracy (label with the highest length-normalised likelihood)")
EXACT_MATCH = ("text-generation", "exact_match", "exact match of greedy answers")
TOKEN_LIKELIHOOD = ("text-generation", "token_likelihood", "per-token likelihood of the reference completion")


def task_metrics(config: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """What each task of a timeline config was scored with, by task name (from the config that ran)."""
    out = {}
    for entry in list(config.get("tasks", ())) + list(config.get("held_out", ())):
        spec = {"name": entry} if isinstance(entry, str) else dict(entry)
        kind, name = spec.get("kind", "text"), str(spec.get("name"))
        if kind == "sft":
            out[name] = EXACT_MATCH if spec.get("short_answer") else TOKEN_LIKELIHOOD
        elif kind == "classification" or name.endswith("_prompt"):  # built-in *_prompt tasks are classification
            out[name] = LABEL_LIKELIHOOD
        else:
            out[name] = HEAD_FREE
    return out


def eval_results(state: TimelineState, datasets: Mapping[str, str] | None = None) -> list:
    """``EvalResult`` entries for the last step: accuracy per task, then A_KA, A_ZS and GM."""
    from huggingface_hub import EvalResult

    if not state.steps:
        return []
    datasets = datasets or {}
    last = state.steps[-1]
    kinds = task_metrics(state.config)
    out = []
    for t in list(state.adaptation_tasks) + list(state.held_out_tasks):
        task_type, metric_type, metric_name = kinds.get(t, HEAD_FREE)
        out.append(EvalResult(task_type=task_type, dataset_type=datasets.get(t, t), dataset_name=t, dataset_split="test",
                              metric_type=metric_type, metric_value=round(float(last.accuracy[t]), 4),
                              metric_name=metric_name))
    for key in sorted(k for k in last.accuracy if k.startswith("lm_eval/")):  # backend lm_eval's scores
        _, task, metric = key.split("/", 2)
        out.append(EvalResult(task_type="text-generation", dataset_type=task, dataset_name=task, dataset_split="test",
                              metric_type=metric, metric_value=round(float(last.accuracy[key]), 4),
                              metric_name=f"lm-eval {metric}"))
    final = state.final_metrics()
    for key, name in (("a_ka", "A_KA (knowledge accumulation)"), ("a_zs", "A_ZS (zero-shot retention)"),
                      ("geometric_mean", "geometric mean of A_KA and A_ZS")):
        if final[key] is not None:
            out.append(EvalResult(task_type="text-classification", dataset_type=TIMELINE_DATASET,
                                  dataset_name="timeline tasks", metric_type=key, metric_value=round(final[key], 4),
                                  metric_name=name))
    return out


def _config_yaml(config: Mapping[str, Any]) -> str:
    """The config in its canonical key order (a state read back from JSON has its keys sorted)."""
    from hf_time.errors import ConfigError
    from hf_time.timeline.config import timeline_config_from_dict

    try:
        return timeline_config_from_dict(config).to_yaml()
    except ConfigError:  # e.g. a task registered in another hf_time version: still show it
        return yaml.safe_dump(dict(config), sort_keys=True)


def render_timeline_card(state: TimelineState, *, title: str | None = None, recipe: Mapping[str, Any] | None = None,
                         datasets: Mapping[str, str] | None = None, plot_file: str | None = PLOT_FILE,
                         base_models: list[str] | None = None, adapter: bool = False) -> str:
    """Render README.md of the snapshot deployed after the last step of ``state``.

    Args:
        state: the timeline state including the step being published.
        title: card title (default: the repo name and the step).
        recipe: how the deployed node was made (method, parameters, inputs, weights), if it is a merge.
        datasets: task name -> dataset id for ``model-index`` (default: the task name).
        plot_file: the plot's path in the repo (None: no plot, matplotlib is not installed).
        base_models: the Hub models this snapshot was made from (default: the base); the card's ``base_model``.
        adapter: the snapshot is a PEFT adapter (a LoRA expert or a low-rank merge): ``library_name: peft``,
            ``base_model_relation: adapter``.
    """
    from huggingface_hub import ModelCardData

    from hf_time.merges import get

    last = state.steps[-1]
    strategy = dict(state.config["strategy"])
    spec = get(strategy["method"])
    name = state.repo_id.split("/")[-1]
    model_name = f"{name} (step {last.step})"
    merged = last.deployed.kind != "expert"
    data = ModelCardData(
        base_model=base_models or ([state.base.repo_id] if state.base.repo_id else None),
        library_name="peft" if adapter else "transformers",
        tags=["hf_time", "temporal-merging", "time", f"init-{strategy['init']}", f"deploy-{strategy['deploy']}",
              strategy["method"]] + (["lora"] if adapter else []),
        base_model_relation="adapter" if adapter else "merge" if merged else "finetune",
        eval_results=eval_results(state, datasets),
        model_name=model_name,
    )
    steps = [{"step": s.step, "task": s.task, "init": _link(s.init), "expert": _link(s.expert)} for s in state.steps]
    metrics = [{k: (_fmt(v) if k != "step" else v) for k, v in m.items()} for m in state.metrics()]
    deployed_label = {"expert": f"the expert of step {last.step}", "chain": f"the running merge r_{last.step}",
                      "merge_all": f"the merge of experts 1..{last.step}",
                      "soup": f"the greedy soup of experts 1..{last.step}"}[last.deployed.kind]
    card = render_template(
        "timeline",
        data,
        title=title or model_name,
        model_name=model_name,
        repo_id=state.repo_id,
        step=last.step,
        strategy=strategy,
        summary=spec.summary,
        paper=spec.paper,
        uses_ema_weight=spec.kind == "dense" and "ema" in (strategy["init"], strategy["deploy"]),
        deployed_label=deployed_label,
        recipe=recipe,
        base_link=_link(state.base),
        steps=steps,
        matrix_table=matrix_table(state),
        metrics=metrics,
        plot_file=plot_file,
        config_yaml=_config_yaml(state.config),
    )
    return str(card)


def plot_timeline(state: TimelineState, path: str | os.PathLike) -> Path:
    """Write the plot of :func:`plot_png` to ``path``.

    Raises:
        ConfigError: matplotlib is not installed (``pip install matplotlib``).
    """
    png = plot_png(state)
    if png is None:
        from hf_time.errors import ConfigError

        raise ConfigError("plotting needs matplotlib: pip install matplotlib (or pip install '.[plot]' in a checkout of hf_time)")
    path = Path(path)
    path.write_bytes(png)
    return path


def can_plot() -> bool:
    """Whether matplotlib is installed (the ``plot`` extra); without it snapshots have no plot.png."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (headless), or None without the ``plot`` extra."""
    if not can_plot():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prepare_plot() -> None:
    """Import matplotlib now: a timeline does it at its set-up, so that the 0.4-0.7 s of the import is
    not charged to the first step's card (a no-op without the ``plot`` extra)."""
    _pyplot()


def plot_png(state: TimelineState) -> bytes | None:
    """The PNG: the A_KA / A_ZS / GM trajectory (step 0 = base) and the accuracy matrix; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    tasks = list(state.adaptation_tasks) + list(state.held_out_tasks)
    metrics = state.metrics()
    base = state.base_accuracy

    def mean(names):
        return sum(base[n] for n in names) / len(names) if names else float("nan")

    b_ka, b_zs = mean(state.adaptation_tasks), mean(state.held_out_tasks)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    xs = [0] + [m["step"] for m in metrics]
    for key, label, b in (("a_ka", "A_KA", b_ka), ("a_zs", "A_ZS", b_zs),
                          ("geometric_mean", "GM", math.sqrt(b_ka * b_zs) if state.held_out_tasks else float("nan"))):
        ax1.plot(xs, [b] + [float("nan") if m[key] is None else m[key] for m in metrics], marker="o", label=label)
    ax1.set_xlabel("step (0 = base)")
    ax1.set_ylabel("accuracy")
    ax1.set_xticks(xs)
    ax1.set_title(f"{state.repo_id.split('/')[-1]}: trajectory")
    ax1.grid(alpha=0.3)
    ax1.legend()
    rows = [[base[t] for t in tasks]] + [[s.accuracy[t] for t in tasks] for s in state.steps]
    im = ax2.imshow(rows, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax2.set_xticks(range(len(tasks)), [t + ("*" if t in state.held_out_tasks else "") for t in tasks], rotation=30,
                   ha="right", fontsize=8)
    ax2.set_yticks(range(len(rows)), ["base"] + [f"step {s.step}" for s in state.steps], fontsize=8)
    if state.held_out_tasks:
        ax2.axvline(len(state.adaptation_tasks) - 0.5, color="white", lw=2)
    ax2.set_title("accuracy matrix (* held out)")
    fig.colorbar(im, ax=ax2, fraction=0.03)
    fig.tight_layout()
    buffer = io.BytesIO()
    # No Software/date metadata: the same state always gives the same bytes (resume compares hashes).
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
