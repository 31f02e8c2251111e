"""The card of an upcycled MoE, rendered from its lineage (``model_cards/moe.md``)."""

from __future__ import annotations

from hf_time.cards import config_yaml, hub_ids, model_entry, render_template
from hf_time.lineage import Lineage


def render_moe_card(lineage: Lineage, title: str | None = None) -> str:
    """README.md of a ``moe`` snapshot: what each expert is, how the router was made, how to rebuild it."""
    from huggingface_hub import ModelCardData

    settings = dict(lineage.details.get("config") or {})
    experts = []
    for i, e in enumerate(lineage.experts):
        shared = e.details.get("role") == "shared"
        prompts = "; ".join(f"`{p}`" for p in e.parameters.get("positive_prompts") or []) or "-"
        experts.append(model_entry(e, role="shared expert" if shared else f"expert {i}", prompts=prompts.replace("|", "\\|")))
    name = title or "Mixture of experts"
    data = ModelCardData(base_model=hub_ids(lineage.base, *lineage.experts) or None, library_name="transformers",
                         tags=["hf_time", "moe", "merge", settings.get("architecture", "moe")],
                         base_model_relation="merge")
    card = render_template(
        "moe", data, title=name, architecture=settings.get("architecture"),
        gate_mode=settings.get("gate_mode"), seed=settings.get("seed"), experts_per_token=settings.get("experts_per_token"),
        base=model_entry(lineage.base), experts=experts, all_pinned=all(r.repo_id for r in lineage.inputs()),
        config_yaml=config_yaml(lineage))
    return str(card)
