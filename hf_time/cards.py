"""Model cards of merged and trained snapshots, rendered from their :class:`~hf_time.lineage.Lineage`.

Cards are rendered from the templates in ``model_cards/`` through huggingface_hub's
``ModelCard``/``ModelCardData`` (so the YAML header is what the Hub expects: ``base_model`` as a
list, ``base_model_relation: merge``, tags). Rendering never touches the network: whether an input
is a Hub model is known from its lineage record. Low-rank outputs have their own renderers in
:mod:`hf_time.lowrank.cards`; :func:`hf_time.pipeline.cards.render_card` picks the one that fits.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_time.lineage import Lineage, RefRecord

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData


def template_text(name: str) -> str:
    """The text of ``model_cards/<name>.md`` as shipped in the package."""
    return resources.files("hf_time.model_cards").joinpath(f"{name}.md").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _compiled(name: str) -> Any:
    import jinja2

    return jinja2.Template(template_text(name))


def render_template(name: str, data: ModelCardData, **kwargs: Any) -> ModelCard:
    """``ModelCard.from_template(data, template_str=template_text(name), **kwargs)``, what that does
    (render the Jinja template with ``card_data`` = the YAML header), with the template compiled once
    per process: compiling is ~35 ms, a third of a card, paid at every step of a timeline."""
    from huggingface_hub import ModelCard

    return ModelCard(_compiled(name).render(card_data=data.to_yaml(), **kwargs))


def model_entry(record: RefRecord, **extra: Any) -> dict[str, Any]:
    """What a template shows of one input: its link (endpoint-relative for Hub models), short sha..."""
    # A local input is shown by its folder's name: the card is for readers elsewhere, and the full
    # path (this machine's) stays in hf_time.json and merge_config.yaml, which reproduce the merge.
    link = f"[{record.repo_id}](/{record.repo_id})" if record.repo_id else f"`{Path(record.ref).name}` (local folder)"
    shown = record.ref if record.repo_id else f"./{Path(record.ref).name}"  # what prose and commands show
    return {"ref": record.ref, "shown": shown, "repo_id": record.repo_id, "revision": record.revision, "sha": record.sha,
            "link": link, "short_sha": record.sha[:10] if record.sha else None,
            "load_id": record.repo_id or record.ref, "name": record.short_name, **extra}


def hub_ids(*records: RefRecord | None) -> list[str]:
    """The distinct Hub repo ids among ``records`` (the Hub rejects local paths in ``base_model``)."""
    return list(dict.fromkeys(r.repo_id for r in records if r is not None and r.repo_id))


def config_yaml(lineage: Lineage) -> str:
    """The card's "Reproduce" block: merge_config.yaml with local folders shown by name (see merge_config.yaml)."""
    config = lineage.merge_config()
    if not config:
        return ""
    local = {r.ref: f"./{Path(r.ref).name}" for r in lineage.inputs() if not r.repo_id}
    text = yaml.safe_dump(config, sort_keys=False)
    for path, short in local.items():
        text = text.replace(path, short)
    return text


def eval_results(lineage: Lineage, model_name: str) -> list:
    """The lineage's scores as huggingface_hub ``EvalResult`` entries (the card's ``model-index``)."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=e.get("task_type", "text-classification"), dataset_type=e.get("dataset") or e["task"],
                       dataset_name=e["task"], dataset_split=e.get("split"), metric_type=e["metric"],
                       metric_value=round(float(e["value"]), 4), metric_name=e.get("metric_name"))
            for e in lineage.evaluation]


def render_merge_card(lineage: Lineage, title: str | None = None) -> str:
    """README.md of a merged (or folded) full model.

    Args:
        lineage: a ``merge`` or ``fold`` lineage with a ``model`` output.
        title: card title; defaults to "Merged model".
    """
    from huggingface_hub import ModelCardData

    method = lineage.method
    experts = [model_entry(e, weight=e.weight) for e in lineage.experts]
    previous = model_entry(lineage.previous) if lineage.previous else None
    name = title or "Merged model"
    data = ModelCardData(
        base_model=hub_ids(lineage.base, lineage.previous, *lineage.experts) or None,
        library_name="transformers",
        tags=["hf_time", "merge", method.name],
        base_model_relation="merge",
        eval_results=eval_results(lineage, name) or None,
        model_name=name if lineage.evaluation else None,
    )
    card = render_template(
        "merge",
        data,
        title=name,
        method=method.name,
        evaluation=list(lineage.evaluation),
        soup=lineage.details.get("greedy_soup"),
        summary=method.summary,
        paper=method.paper,
        parameters=dict(method.parameters),
        lines=method.lines,
        base=model_entry(lineage.base),
        experts=experts,
        previous=previous,
        step=(lineage.state or {}).get("t"),
        all_pinned=all(r.repo_id for r in lineage.inputs()),
        config_yaml=config_yaml(lineage),
        slices=len(lineage.slices),
        num_layers=lineage.output.details.get("num_layers"),
        tokenizer_source=_vocabulary(lineage),
    )
    return str(card)


def _vocabulary(lineage: Lineage) -> str | None:
    """The card's word for ``tokenizer_source``: base, union, or the model's name (never a local path)."""
    source = (lineage.tokenizer or {}).get("tokenizer_source")
    if source in (None, "base", "union"):
        return source
    return source.split("@")[0].rstrip("/").split("/")[-1]


def _flat(d: Any) -> dict[str, Any]:
    """Nested settings as one table row each (``lora`` as JSON); unset values left out."""
    import json

    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in dict(d).items() if v is not None}


def render_expert_card(lineage: Lineage, title: str, *, adapter: bool = False) -> str:
    """README.md of a finetuned expert (full weights or a PEFT adapter), from a ``train`` lineage.

    ``details`` holds ``task``, ``training`` (flat settings) and ``stats`` (results).
    """
    from huggingface_hub import ModelCardData

    base = lineage.base
    task = lineage.details["task"]
    data = ModelCardData(
        base_model=base.repo_id,
        library_name="peft" if adapter else "transformers",
        tags=["hf_time", "expert", str(task)] + (["lora"] if adapter else []),
        base_model_relation="adapter" if adapter else "finetune",
    )
    card = render_template(
        "expert",
        data,
        title=title,
        base=model_entry(base),
        task=task,
        training=_flat(lineage.details.get("training") or {}),
        stats=dict(lineage.details.get("stats") or {}),
    )
    return str(card)
