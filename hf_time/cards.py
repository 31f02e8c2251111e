"""Model cards and lineage metadata for published snapshots.

Cards are rendered from the templates in ``model_cards/`` through huggingface_hub's
``ModelCard``/``ModelCardData`` (so the YAML header is what the Hub expects: ``base_model`` as a
list, ``base_model_relation: merge``, tags). Rendering never touches the network: whether a
reference is a Hub model is known from the reference itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

LINEAGE_FILE = "hf_time.json"


def template_text(name: str) -> str:
    """The text of ``model_cards/<name>.md`` as shipped in the package."""
    return resources.files("hf_time.model_cards").joinpath(f"{name}.md").read_text(encoding="utf-8")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _model_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    repo_id, sha = entry.get("repo_id"), entry.get("sha")
    link = f"[{repo_id}](/{repo_id})" if repo_id else f"`{entry['ref']}`"
    return {**entry, "link": link, "short_sha": sha[:10] if sha else None}


def render_merge_card(lineage: Mapping[str, Any], config_yaml: Mapping[str, Any], title: str | None = None) -> str:
    """Render the README.md of a merged snapshot.

    Args:
        lineage: the ``hf_time.json`` content (see :func:`hf_time.api.merge`).
        config_yaml: the reproducible mergekit-style config (pinned references).
        title: card title; defaults to the target repo name or "Merged model".

    Returns:
        The card text (YAML header + markdown body).
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = _model_entry(lineage["base"])
    experts = [_model_entry(e) for e in lineage["experts"]]
    hub_ids = [m["repo_id"] for m in [base, *experts] if m.get("repo_id")]
    data = ModelCardData(
        base_model=list(dict.fromkeys(hub_ids)) or None,
        library_name="transformers",
        tags=["hf_time", "merge", lineage["method"]],
        base_model_relation="merge",
    )
    card = ModelCard.from_template(
        data,
        template_str=template_text("merge"),
        title=title or "Merged model",
        method=lineage["method"],
        summary=lineage.get("summary"),
        paper=lineage.get("paper"),
        parameters=lineage.get("parameters") or {},
        lines=lineage.get("lines"),
        base=base,
        experts=experts,
        config_yaml=yaml.safe_dump(dict(config_yaml), sort_keys=False),
    )
    return str(card)


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def render_expert_card(lineage: Mapping[str, Any], title: str, *, adapter: bool = False) -> str:
    """Render the README.md of a finetuned expert (full weights or a PEFT adapter).

    Args:
        lineage: ``{"base": {ref, repo_id, sha}, "task": str, "training": {...}, "stats": {...}}``.
        title: card title (usually the repo name).
        adapter: the expert is a PEFT adapter (``base_model_relation: adapter``) instead of full weights.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = lineage["base"]
    data = ModelCardData(
        base_model=base.get("repo_id"),
        library_name="peft" if adapter else "transformers",
        tags=["hf_time", "expert", str(lineage["task"])] + (["lora"] if adapter else []),
        base_model_relation="adapter" if adapter else "finetune",
    )
    card = ModelCard.from_template(
        data,
        template_str=template_text("expert"),
        title=title,
        base=base,
        task=lineage["task"],
        training=lineage.get("training") or {},
        stats=lineage.get("stats") or {},
    )
    return str(card)
